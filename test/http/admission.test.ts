import { describe, expect, test } from 'bun:test'
import { ConnectionCounts, FLOOD_PENALTY_MS, originRefusal } from '../../src/http/admission'

describe('originRefusal', () => {
  test('any origin when none is configured; a listed origin passes, others get 403', () => {
    expect(originRefusal('http://evil.example', null)).toBeNull()
    const allowed = ['https://chat.example', 'http://localhost:8081']
    expect(originRefusal('https://chat.example', allowed)).toBeNull()
    expect(originRefusal('HTTPS://CHAT.EXAMPLE', allowed)).toBeNull()
    expect(originRefusal('http://evil.example', allowed)).toMatchObject({ status: 403 })
    expect(originRefusal('https://chat.example.evil.example', allowed)).toMatchObject({ status: 403 })
    expect(originRefusal('null', allowed)).toMatchObject({ status: 403 }) // sandboxed frames, file://
  })
  test('no Origin header (not a browser page) passes', () => {
    expect(originRefusal(null, ['https://chat.example'])).toBeNull()
  })
})

describe('ConnectionCounts', () => {
  test('per-address cap gives 429, node cap 503; a release makes room again', () => {
    const counts = new ConnectionCounts({ perIp: 2, total: 3 })
    expect(counts.acquire('a')).toBe(true)
    expect(counts.acquire('a')).toBe(true)
    expect(counts.refusal('a')).toMatchObject({ status: 429 })
    expect(counts.acquire('a')).toBe(false)
    expect(counts.acquire('b')).toBe(true)
    expect(counts.refusal('c')).toMatchObject({ status: 503 })
    counts.release('a')
    expect(counts.refusal('a')).toBeNull()
    expect(counts.counts()).toEqual({ total: 2, addresses: 2 })
  })
  test('an overloaded node refuses every new socket with 503, asking the load once a socket', () => {
    let busy = true
    let asked = 0
    const counts = new ConnectionCounts({ perIp: 2, total: 3, overloaded: () => (asked++, busy) })
    expect(counts.refusal('a')).toMatchObject({ status: 503, error: expect.stringContaining('overloaded') })
    busy = false
    expect(counts.refusal('a')).toBeNull()
    // The socket admitted before the upgrade opens: counted, the load not asked again (the
    // question may count what it is asked, as the lag monitor's crowded turn does).
    busy = true
    expect(counts.acquire('a')).toBe(true)
    expect(asked).toBe(2)
  })
  test('releasing more than was acquired changes nothing', () => {
    const counts = new ConnectionCounts({ perIp: 1, total: 1 })
    counts.release('a')
    expect(counts.acquire('a')).toBe(true)
    counts.release('a')
    counts.release('a')
    expect(counts.counts()).toEqual({ total: 0, addresses: 0 })
  })
})

describe('new connections a second per address', () => {
  test('a bucket of 10 s worth; then one a tick of the rate; other addresses are unaffected', () => {
    const counts = new ConnectionCounts({ perIp: 1000, total: 1000, connectsPerIpPerSecond: 5 })
    for (let i = 0; i < 50; i++) expect(counts.connectRefusal('a', 1000)).toBeNull()
    expect(counts.connectRefusal('a', 1000)).toEqual({ status: 429, error: 'at most 5 new connections a second per client address' })
    expect(counts.connectRefusal('b', 1000)).toBeNull()
    expect(counts.connectRefusal('a', 1199)).not.toBeNull()
    expect(counts.connectRefusal('a', 1200)).toBeNull() // 200 ms at 5/s: one token
  })

  test('0 turns it off; a clock stepping back neither drains nor fills the bucket', () => {
    const off = new ConnectionCounts({ perIp: 10, total: 10, connectsPerIpPerSecond: 0 })
    for (let i = 0; i < 1000; i++) expect(off.connectRefusal('a', 0)).toBeNull()
    const counts = new ConnectionCounts({ perIp: 10, total: 10, connectsPerIpPerSecond: 1 })
    for (let i = 0; i < 10; i++) expect(counts.connectRefusal('a', 5000)).toBeNull()
    expect(counts.connectRefusal('a', 1000)).not.toBeNull()
  })
})

test('a name closed for flooding is kept out from its address for FLOOD_PENALTY_MS; other names and addresses are not', () => {
  const counts = new ConnectionCounts({ perIp: 10, total: 100 })
  expect(counts.penaltyRefusal('a', 'mallory', 0)).toBeNull()
  counts.penalize('a', 'mallory', 1000)
  expect(counts.penaltyRefusal('a', 'mallory', 1000)).toEqual({ status: 429, error: 'closed for flooding: mallory may connect again from this address in 10 s' })
  expect(counts.penaltyRefusal('a', 'alice', 1000)).toBeNull()
  expect(counts.penaltyRefusal('b', 'mallory', 1000)).toBeNull()
  expect(counts.penaltyRefusal('a', 'mallory', 1000 + FLOOD_PENALTY_MS - 1)).not.toBeNull()
  expect(counts.penaltyRefusal('a', 'mallory', 1000 + FLOOD_PENALTY_MS)).toBeNull()
})
