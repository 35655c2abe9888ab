// Node addresses and ids, formatted and parsed in one place.
//   address: `bun://<system>@<host>:<port>`, where a node is reached (an IPv6 host in brackets)
//   id:      `<address>#<incarnation>`, one run of a node; a restart is a new incarnation
export interface NodeAddress {
  systemName: string
  host: string
  port: number
}

const ADDRESS = /^bun:\/\/([A-Za-z0-9][A-Za-z0-9_-]*)@(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/

/** A host as it goes into a URL or an address: IPv6 in brackets. */
export const urlHost = (host: string) => (host.includes(':') && !host.startsWith('[') ? `[${host}]` : host)

export function formatAddress({ systemName, host, port }: NodeAddress): string {
  return `bun://${systemName}@${urlHost(host)}:${port}`
}

export function parseAddress(address: string): NodeAddress | null {
  const match = ADDRESS.exec(address)
  if (!match) return null
  const port = Number(match[3])
  if (port < 1 || port > 65535) return null
  const host = match[2]!
  return { systemName: match[1]!, host: host.startsWith('[') ? host.slice(1, -1) : host, port }
}

export const nodeId = (address: string, incarnation: string) => `${address}#${incarnation}`

export const addressOf = (idOrAddress: string) => {
  const hash = idOrAddress.lastIndexOf('#')
  return hash < 0 ? idOrAddress : idOrAddress.slice(0, hash)
}

export const incarnationOf = (id: string) => id.slice(id.lastIndexOf('#') + 1)
