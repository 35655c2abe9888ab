// TLS on the cluster port: both sides present a certificate signed by the cluster's CA and check
// the other's against it (mutual TLS). The PEM contents are read once, at start-up (src/index.ts).
export interface TlsFiles {
  /** PEM certificate chain of this node. */
  cert: string
  /** PEM private key of this node. */
  key: string
  /** PEM certificate(s) of the CA that signs every node's certificate; the only one trusted. */
  ca: string
}
