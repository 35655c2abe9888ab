import { describe, expect, test } from 'bun:test'
import { ConnectionCounts, originRefusal } from '../../src/http/admission'

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
  test('an overloaded node refuses every new socket with 503', () => {
    let busy = true
    const counts = new ConnectionCounts({ perIp: 2, total: 3, overloaded: () => busy })
    expect(counts.refusal('a')).toMatchObject({ status: 503, error: expect.stringContaining('overloaded') })
    expect(counts.acquire('a')).toBe(false)
    busy = false
    expect(counts.acquire('a')).toBe(true)
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
