// The whole-node simulator under `bun test`: complete nodes (cluster shell, membership, transcript,
// chat room, presence, gateway) on the in-memory transport, under seeded fault schedules, with
// users that resume and resend as the page does. Issue 9's guarantees hold on every seed: chat
// exactly once, acked messages at their ids, one transcript on every node, every connection's
// lines once, in order and without a gap it was not told of. The presence lists, which travel
// outside the transcript at most once, still diverge under the hostile transport: shown as a
// known failure below.
import { describe, expect, test } from 'bun:test'
import { runSeedsInParallel, type Totals } from './parallel'
import { runWholeSeed, type WholeOptions } from './world'

/**
 * Seeds per run, three quarters over TCP-like faults and a quarter over the hostile transport;
 * `WHOLE_SEEDS=N` to change, `SIM_WORKERS=N` for the number of worker threads (default: cores).
 */
const SEEDS = Number(process.env.WHOLE_SEEDS ?? 2000)
const TCP_SEEDS = Math.ceil((SEEDS * 3) / 4)
const HOSTILE_SEEDS = SEEDS - TCP_SEEDS

async function run(label: string, count: number, options: Omit<WholeOptions, 'trace'>): Promise<Totals> {
  const started = performance.now()
  const totals = await runSeedsInParallel(0, count, options)
  const seconds = (performance.now() - started) / 1000
  const t = totals.sums
  console.log(
    `whole-node simulator, ${label}: ${totals.seeds} seeds in ${seconds.toFixed(1)} s (${(totals.seeds / seconds).toFixed(1)} seeds/s), ` +
      `${t.chats ?? 0} chat messages (${t.acked ?? 0} acks), ${t.resumes ?? 0} resumes, ${t.lines ?? 0} transcript lines (${t.sharedLines ?? 0} telling of several users), ${t.deliveries ?? 0} line deliveries checked, ` +
      `${t.snapshots ?? 0} snapshots installed, ${t.crashes ?? 0} crashes, ${t.partitions ?? 0} partitions, ${t.leaves ?? 0} leaves, ${t.dropped ?? 0} frames dropped, ${t.duplicated ?? 0} duplicated`,
  )
  return totals
}

test(`${TCP_SEEDS} whole-node seeds over TCP-like faults: membership, one transcript, chat exactly once and in order, acks, resume without gaps, presence exact`, async () => {
  const totals = await run('tcp profile', TCP_SEEDS, {})
  expect(totals.failure?.message ?? null).toBeNull()
  expect(totals.seeds).toBe(TCP_SEEDS)
  // The runs exercise what they claim to: resumes, acks, snapshots installed, faults.
  for (const key of ['resumes', 'acked', 'snapshots', 'crashes', 'partitions', 'leaves', 'incomplete']) expect(totals.sums[key] ?? 0).toBeGreaterThan(0)
}, 600_000)

test(`${HOSTILE_SEEDS} whole-node seeds over a transport that loses, duplicates and reorders frames: the transcript's guarantees hold (presence lists not judged)`, async () => {
  const totals = await run('hostile profile', HOSTILE_SEEDS, { profile: 'hostile' })
  expect(totals.failure?.message ?? null).toBeNull()
  expect(totals.seeds).toBe(HOSTILE_SEEDS)
  expect(totals.sums.dropped ?? 0).toBeGreaterThan(0)
  expect(totals.sums.duplicated ?? 0).toBeGreaterThan(0)
}, 600_000)

test('one seed is one run: the same seed gives the same history', async () => {
  expect(await runWholeSeed(17)).toEqual(await runWholeSeed(17))
  expect(await runWholeSeed(18, { profile: 'hostile' })).toEqual(await runWholeSeed(18, { profile: 'hostile' }))
})

// Known failure: presence (the user lists and their join/leave frames) travels between nodes
// outside the transcript, at most once; a transport that loses or duplicates frames on a live
// connection makes the lists diverge. No TCP connection does that (the tcp profile judges
// presence on every seed); this test passes while the divergence is found, and fails, to be
// turned into a zero-failure run, once presence is made robust to it.
describe('known failures', () => {
  test('presence lists diverge when the transport loses, duplicates or reorders frames (hostile profile, presence judged)', async () => {
    const totals = await runSeedsInParallel(0, 200, { profile: 'hostile', strictPresence: true })
    expect(totals.failure).not.toBeNull()
    expect(totals.failure!.invariant).toMatch(/^Presence/)
    console.log(`known failure, presence under the hostile transport: ${totals.failure!.message.split('\n').join('\n  ')}`)
  }, 120_000)
})
