// Real network faults for end-to-end tests: each node in its own network namespace, joined by a
// bridge in a hub namespace, and links cut with nftables drop rules inside the nodes' namespaces.
// A cut keeps TCP connections open and retransmitting, as a silent partition in a real network
// does (this kernel has no `tc netem`, see shared FAULTS notes). The test process reaches every
// node over a veth from the root namespace, so users connect as they would over a LAN.
//
//   const lab = await createLab(3)           // or skip: netnsUnavailable() says why
//   lab.cut(1, 2)                             // both directions; lab.cut(1, 2, 'one-way') drops 1→2 only
//   lab.heal(1, 2); lab.isolate(1); lab.healAll()
//   lab.destroy()                             // in a finally; the preload also destroys leftovers
//
// Addresses: 10.199.X.N/24, with X chosen free per lab, N the node's number and .254 the root
// namespace's end. Traffic goes only to addresses this file assigned, and every namespace, veth
// and nft table it made is removed by destroy() (deleting a namespace deletes its veths and tables).

const NAME_PREFIX = 'wsc'
const FAULT_TABLE = 'wscfault'

function run(argv: string[], stdin?: string): { ok: boolean; out: string } {
  const proc = Bun.spawnSync(argv, { stdin: stdin === undefined ? 'ignore' : new TextEncoder().encode(stdin), stdout: 'pipe', stderr: 'pipe' })
  return { ok: proc.exitCode === 0, out: `${proc.stdout.toString()}${proc.stderr.toString()}`.trim() }
}

function must(argv: string[], stdin?: string): string {
  const result = run(argv, stdin)
  if (!result.ok) throw new Error(`${argv.join(' ')}: ${result.out}`)
  return result.out
}

/** Null when namespaces and nft can be used here; otherwise the reason, for a skip message. */
export function netnsUnavailable(): string | null {
  if (process.platform !== 'linux') return 'network namespaces need Linux'
  if (!Bun.which('ip')) return 'the `ip` command (iproute2) is missing'
  if (!Bun.which('nft')) return 'the `nft` command is missing: run scripts/deps.sh --netns (Debian package nftables)'
  // A real attempt: capabilities can be present on paper and refused by a sandbox.
  const probe = `${NAME_PREFIX}${process.pid}-probe`
  const added = run(['ip', 'netns', 'add', probe])
  if (!added.ok) return `cannot create a network namespace (needs root with CAP_NET_ADMIN): ${added.out}`
  const nft = run(['ip', 'netns', 'exec', probe, 'nft', 'list', 'tables'])
  run(['ip', 'netns', 'del', probe])
  if (!nft.ok) return `nft does not work in a namespace here: ${nft.out}`
  return null
}

export type CutDirection = 'both' | 'one-way'

export interface Lab {
  readonly size: number
  /** The address node `n` (1-based) listens on. */
  address(n: number): string
  /** Argv prefix that runs a command inside node `n`'s namespace. */
  exec(n: number): string[]
  /** Drops packets between nodes a and b (or only a→b). Idempotent. */
  cut(a: number, b: number, direction?: CutDirection): void
  heal(a: number, b: number): void
  /** Cuts node n from every other node (not from the test process: its users still reach it). */
  isolate(n: number): void
  healAll(): void
  destroy(): void
}

const labs = new Set<Lab>()

/** Destroys every lab this process created and did not destroy yet (the preload calls it). */
export function destroyAllLabs(): void {
  for (const lab of [...labs]) lab.destroy()
}

/** Namespaces of earlier runs whose process is gone (a crash, a SIGKILL): ours to remove. */
function removeLeftovers(): void {
  const list = run(['ip', 'netns', 'list'])
  if (!list.ok) return
  for (const line of list.out.split('\n')) {
    const name = line.split(' ')[0] ?? ''
    const match = new RegExp(`^${NAME_PREFIX}(\\d+)-`).exec(name)
    if (!match) continue
    const pid = Number(match[1])
    if (pid !== process.pid && isAlive(pid)) continue
    if (pid === process.pid && [...labs].some((lab) => (lab as LabImpl).owns(name))) continue
    run(['ip', 'netns', 'del', name])
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** A /24 in 10.199.0.0/16 that no interface of the root namespace uses yet. */
function freeSubnet(): number {
  const used = run(['ip', '-4', '-o', 'addr', 'show']).out
  for (let attempt = 0; attempt < 100; attempt++) {
    const x = 1 + Math.floor(Math.random() * 250)
    if (!used.includes(`10.199.${x}.`)) return x
  }
  throw new Error('no free 10.199.X.0/24 subnet')
}

class LabImpl implements Lab {
  private readonly tag: string
  private readonly hub: string
  private readonly rootVeth: string
  private readonly nodes: string[]
  /** Per node: addresses whose packets it drops, outgoing and incoming. */
  private readonly blocked: { out: Set<number>; in: Set<number> }[]
  private destroyed = false

  constructor(
    readonly size: number,
    private readonly subnet: number,
  ) {
    // Interface names are global in the root namespace and at most 15 characters.
    this.tag = `${NAME_PREFIX}${process.pid}-${subnet}`
    this.hub = `${this.tag}-hub`
    this.rootVeth = `wsc${(process.pid % 100_000).toString(36)}${subnet.toString(36)}`
    this.nodes = Array.from({ length: size }, (_, i) => `${this.tag}-n${i + 1}`)
    this.blocked = Array.from({ length: size }, () => ({ out: new Set(), in: new Set() }))
  }

  owns(namespace: string): boolean {
    return namespace.startsWith(`${this.tag}-`)
  }

  build(): void {
    const net = `10.199.${this.subnet}`
    must(['ip', 'netns', 'add', this.hub])
    must(['ip', '-n', this.hub, 'link', 'add', 'br0', 'type', 'bridge'])
    must(['ip', '-n', this.hub, 'link', 'set', 'br0', 'up'])
    must(['ip', 'link', 'add', this.rootVeth, 'type', 'veth', 'peer', 'name', 'root', 'netns', this.hub])
    must(['ip', '-n', this.hub, 'link', 'set', 'root', 'master', 'br0', 'up'])
    must(['ip', 'addr', 'add', `${net}.254/24`, 'dev', this.rootVeth])
    must(['ip', 'link', 'set', this.rootVeth, 'up'])
    this.nodes.forEach((ns, i) => {
      const n = i + 1
      must(['ip', 'netns', 'add', ns])
      must(['ip', '-n', this.hub, 'link', 'add', `n${n}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns])
      must(['ip', '-n', this.hub, 'link', 'set', `n${n}`, 'master', 'br0', 'up'])
      must(['ip', '-n', ns, 'link', 'set', 'lo', 'up'])
      must(['ip', '-n', ns, 'addr', 'add', `${net}.${n}/24`, 'dev', 'eth0'])
      must(['ip', '-n', ns, 'link', 'set', 'eth0', 'up'])
      // Two sets the cut/heal calls fill and empty; the rules themselves never change.
      must(
        ['ip', 'netns', 'exec', ns, 'nft', '-f', '-'],
        `table inet ${FAULT_TABLE} {
  set out_block { type ipv4_addr; }
  set in_block { type ipv4_addr; }
  chain output { type filter hook output priority 0; policy accept; ip daddr @out_block drop; }
  chain input { type filter hook input priority 0; policy accept; ip saddr @in_block drop; }
}
`,
      )
    })
  }

  address(n: number): string {
    this.check(n)
    return `10.199.${this.subnet}.${n}`
  }

  exec(n: number): string[] {
    this.check(n)
    return ['ip', 'netns', 'exec', this.nodes[n - 1]!]
  }

  cut(a: number, b: number, direction: CutDirection = 'both'): void {
    // Dropped on arrival, not on the way out: a packet the sender's own firewall drops is a local
    // error its TCP retries at once, while one lost on the wire makes TCP back off, as in a real
    // partition (the case to test).
    this.block(b, 'in', a)
    if (direction === 'both') this.block(a, 'in', b)
  }

  heal(a: number, b: number): void {
    for (const [x, y] of [
      [a, b],
      [b, a],
    ] as const) {
      this.unblock(x, 'out', y)
      this.unblock(x, 'in', y)
    }
  }

  isolate(n: number): void {
    for (let other = 1; other <= this.size; other++) if (other !== n) this.cut(n, other)
  }

  healAll(): void {
    for (let a = 1; a <= this.size; a++) for (let b = a + 1; b <= this.size; b++) this.heal(a, b)
  }

  destroy(): void {
    if (this.destroyed) return
    this.destroyed = true
    labs.delete(this)
    for (const ns of [...this.nodes, this.hub]) run(['ip', 'netns', 'del', ns])
    // The root end goes with its peer in the hub; delete it explicitly in case the hub never got it.
    run(['ip', 'link', 'del', this.rootVeth])
  }

  private block(node: number, way: 'out' | 'in', peer: number): void {
    const set = this.blocked[node - 1]![way]
    if (set.has(peer)) return
    must([...this.exec(node), 'nft', 'add', 'element', 'inet', FAULT_TABLE, `${way}_block`, `{ ${this.address(peer)} }`])
    set.add(peer)
  }

  private unblock(node: number, way: 'out' | 'in', peer: number): void {
    const set = this.blocked[node - 1]![way]
    if (!set.has(peer)) return
    must([...this.exec(node), 'nft', 'delete', 'element', 'inet', FAULT_TABLE, `${way}_block`, `{ ${this.address(peer)} }`])
    set.delete(peer)
  }

  private check(n: number): void {
    if (!Number.isInteger(n) || n < 1 || n > this.size) throw new Error(`no node ${n} in a lab of ${this.size}`)
    if (this.destroyed) throw new Error('the lab was destroyed')
  }
}

/** Builds namespaces for `size` nodes; throws (after removing what it made) if any step fails. */
export function createLab(size: number): Lab {
  removeLeftovers()
  const lab = new LabImpl(size, freeSubnet())
  labs.add(lab)
  try {
    lab.build()
  } catch (error) {
    lab.destroy()
    throw error
  }
  return lab
}

// A test process that exits without its afterAll still removes what it made.
process.on('exit', destroyAllLabs)
