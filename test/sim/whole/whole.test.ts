// The whole-node simulator under `bun test`: complete nodes (cluster shell, membership, chat room,
// presence, gateway) on the in-memory transport, under seeded fault schedules. The checks that
// hold today run on every seed; the ones today's delivery path cannot meet are shown failing,
// with their seeds, so the delivery issue can turn them on.
import { describe, expect, test } from 'bun:test'
import { SimulationFailure } from '../simulator'
import { runWholeSeed, type WholeOptions } from './world'

/** About 30-40 s on a 2-core machine; `WHOLE_SEEDS=N bun test test/sim/whole` to change. */
const SEEDS = Number(process.env.WHOLE_SEEDS ?? 300)

async function firstFailure(options: WholeOptions, seeds: number): Promise<SimulationFailure | null> {
  for (let seed = 0; seed < seeds; seed++) {
    try {
      await runWholeSeed(seed, options)
    } catch (error) {
      if (error instanceof SimulationFailure) return error
      throw error
    }
  }
  return null
}

test(`${SEEDS} whole-node seeds over TCP-like faults: membership safe and live, presence exact, chat once and in order after convergence`, async () => {
  const started = performance.now()
  let deliveries = 0
  let chats = 0
  for (let seed = 0; seed < SEEDS; seed++) {
    const stats = await runWholeSeed(seed) // throws a SimulationFailure with the replay command
    deliveries += stats.deliveries
    chats += stats.chats
  }
  const seconds = (performance.now() - started) / 1000
  console.log(`whole-node simulator: ${SEEDS} seeds in ${seconds.toFixed(1)} s (${(SEEDS / seconds).toFixed(0)} seeds/s), ${chats} chat messages, ${deliveries} deliveries checked`)
}, 300_000)

test('one seed is one run: the same seed gives the same history', async () => {
  expect(await runWholeSeed(17)).toEqual(await runWholeSeed(17))
})

// Known failures: today chat is at-most-once (see the delivery issue). These tests pass while the
// simulator finds the loss; when the delivery path guarantees delivery they fail, and should be
// turned into runs that demand zero failures over every seed.
describe('known failures of today\'s delivery path', () => {
  test('messages sent while links fail are lost (strict delivery)', async () => {
    const failure = await firstFailure({ strictDelivery: true }, 60)
    expect(failure).not.toBeNull()
    expect(failure!.invariant).toBe('Delivery: nothing lost')
    console.log(`known failure, strict delivery: ${failure!.message.split('\n')[0]}\n  ${failure!.message.split('\n')[1]}`)
  }, 60_000)

  test('frames lost, duplicated or reordered by the transport break chat and presence (hostile profile)', async () => {
    const failure = await firstFailure({ profile: 'hostile' }, 60)
    expect(failure).not.toBeNull()
    expect(failure!.invariant).toMatch(/^(Delivery|Presence)/)
    console.log(`known failure, hostile transport: ${failure!.message.split('\n')[0]}\n  ${failure!.message.split('\n')[1]}`)
  }, 60_000)
})
