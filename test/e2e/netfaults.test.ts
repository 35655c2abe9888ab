// Real network faults: each node in its own network namespace, links cut with nft drop rules while
// users chat with numbered messages (test/support/netfaults.ts). A short version of
// `bun run netfaults`, which does 20 runs of each cut and the 8 s and 30 s isolations.
// Needs root with CAP_NET_ADMIN and nftables (scripts/deps.sh --netns); skips saying why otherwise.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { netnsUnavailable } from '../support/netns'
import { cutLink, formatResult, isolateLeader, startLabCluster, type LabCluster } from '../support/netfaults'

const unavailable = netnsUnavailable()
if (unavailable) console.warn(`netfaults: skipped: ${unavailable}`)

describe.skipIf(unavailable !== null)('real network faults (network namespaces, nft drops)', () => {
  let cluster: LabCluster
  beforeAll(async () => {
    cluster = await startLabCluster(3)
  }, 60_000)
  afterAll(() => cluster?.stop(), 30_000)

  for (const pair of ['followers', 'leader-follower'] as const) {
    test(`a 2 s cut between ${pair} costs no member, no leader and no message (2 runs)`, async () => {
      for (let run = 0; run < 2; run++) {
        const r = await cutLink(cluster, pair, 2000)
        console.log(`netfaults: ${formatResult(r)}`)
        expect(r.memberChanges).toBe(0)
        expect(r.leaders).toBe(1)
        expect(r.elections).toBe(0)
        expect(r.tally).toMatchObject({ lost: 0, duplicated: 0, reordered: 0 })
        expect(r.healMs).not.toBeNull()
      }
    }, 60_000)
  }

  test('a leader isolated for 4 s: the rest carry on, the isolated side changes no membership, one view again within 1.5 s of the heal, no message lost', async () => {
    const r = await isolateLeader(cluster, 4000)
    console.log(`netfaults: ${formatResult(r)}`)
    expect(r.isolatedChanged).toBe(0)
    expect(r.healMs).not.toBeNull()
    expect(r.healMs!).toBeLessThan(1500)
    // What the isolated node's user said is held and goes in after its rejoin; what the others said reaches it then.
    expect(r.tally).toMatchObject({ lost: 0, duplicated: 0, reordered: 0 })
  }, 60_000)
})
