// Certificates made by the test itself with openssl: a cluster CA, node certificates it signs
// (valid for 127.0.0.1 and localhost), and a rogue CA with a certificate of its own.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface CertSet {
  dir: string
  /** Paths of PEM files. */
  ca: string
  nodeCert: string
  nodeKey: string
  rogueCert: string
  rogueKey: string
  read(path: string): string
  remove(): void
}

function run(args: string[], cwd: string) {
  const result = Bun.spawnSync(['openssl', ...args], { cwd, stdout: 'pipe', stderr: 'pipe' })
  if (result.exitCode !== 0) throw new Error(`openssl ${args.join(' ')}: ${result.stderr.toString()}`)
}

export function makeCerts(): CertSet {
  const dir = mkdtempSync(join(tmpdir(), 'cluster-tls-'))
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  run(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=cluster-ca'], dir)
  run(['req', '-x509', ...ec, '-keyout', 'rogue-ca.key', '-out', 'rogue-ca.crt', '-days', '2', '-subj', '/CN=rogue-ca'], dir)
  Bun.spawnSync(['sh', '-c', 'printf "subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth,clientAuth\\n" > ext'], { cwd: dir })
  for (const [name, ca] of [['node', 'ca'], ['rogue', 'rogue-ca']] as const) {
    run(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir)
    run(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', 'ext'], dir)
  }
  return {
    dir,
    ca: join(dir, 'ca.crt'),
    nodeCert: join(dir, 'node.crt'),
    nodeKey: join(dir, 'node.key'),
    rogueCert: join(dir, 'rogue.crt'),
    rogueKey: join(dir, 'rogue.key'),
    read: (path) => readFileSync(path, 'utf8'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  }
}
