// The CI-sized fuzz run: 30 s of the live fuzzer on a real 3-node cluster with a fixed seed. It
// fails on a dead or unresponsive node, members that disagree, a lost, duplicated, reordered or
// forged checker message, and any unexpected reaction (a 5xx, an undocumented close code, a
// connection the node should have refused left open, an exception in a node's log).
//
// Left out until issue 7 ("Trust no one") lands, because today any process that sends a valid
// hello is a trusted peer and these inputs take the cluster over by design of the current code:
//   cluster.foreign_raft  a non-member's valid Raft messages: leadership taken, members removed,
//                         cluster left without a leader (seen with seed 2 in 10 s)
//   cluster.spoof_raft    the same, claiming a real member's address
//   cluster.spoof_chat    chat and presence in the checker users' names (forged messages, 4409)
// Known findings that are printed but do not fail this run, each tracked in issue 7:
//   - chat from a non-member reaches users (cluster.foreign_chat)
//   - a short Host header makes Elysia route `/abc/api/users` to `/api/users` (Elysia 1.4.30's
//     `url.indexOf('/', 11)`; reproduced with a bare Elysia app)
// When issue 7 lands, delete the exclusions and the known patterns: the full run must pass.
import { expect, test } from 'bun:test'
import { runFuzz } from './fuzz'

const SEED = 20261127
export const ISSUE_7_OPEN_KINDS = ['cluster.foreign_raft', 'cluster.spoof_raft', 'cluster.spoof_chat']
export const ISSUE_7_KNOWN_FINDINGS = [/^chat from a non-member reached users/, /^http\.random: path confusion: /]

test(
  'a 3-node cluster survives 30 s of seeded fuzzing on all three ports and the checker loses nothing',
  async () => {
    const result = await runFuzz({
      seconds: Number(process.env.FUZZ_SECONDS ?? 30),
      seed: SEED,
      exclude: ISSUE_7_OPEN_KINDS,
      knownFindings: ISSUE_7_KNOWN_FINDINGS,
      // Two cores shared with three nodes: a modest load that still covers every kind many times.
      lanes: 4,
      inputsPerSecond: 100,
    })
    console.log(result.summary)
    expect(result.failures).toEqual([])
    // The run did what it claims: every kind ran, nodes refused what they must, the checker chatted.
    for (const [kind, stats] of Object.entries(result.kinds)) expect({ kind, ran: stats.inputs > 5 }).toEqual({ kind, ran: true })
    expect(result.kinds['cluster.invalid']!.outcomes.closed_by_node).toBeGreaterThan(0)
    expect(result.checker.sent).toBeGreaterThan(100)
    expect(result.checker.delivered).toBe(result.checker.expected)
  },
  180_000,
)
