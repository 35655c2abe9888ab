import { describe, expect, test } from 'bun:test'
import { randomBytes } from 'node:crypto'
import { dialerOnAck, dialerStart, listenerOnAuth, listenerOnHello, NONCE_BYTES, type HandshakeSelf } from '../../src/cluster/handshake'
import type { Auth, HelloAck } from '../../src/cluster/messages'

const SYSTEM = 'S'
const A = 'bun://S@127.0.0.1:1001'
const B = 'bun://S@127.0.0.1:1002'
const nonce = () => new Uint8Array(randomBytes(NONCE_BYTES))
const node = (address: string, secrets: string[]): HandshakeSelf => ({ systemName: SYSTEM, address, incarnation: `inc-${address.slice(-1)}`, secrets })

/** Runs a whole handshake from `dialer` to `listener`; returns where it stopped. */
function run(dialer: HandshakeSelf, listener: HandshakeSelf, target = listener.address) {
  const d = dialerStart(dialer, target, nonce())
  const l = listenerOnHello(listener, d.hello, nonce())
  if (!l.ok) return { at: 'hello', error: l.error }
  const auth = dialerOnAck(d, l.value.ack)
  if (!auth.ok) return { at: 'ack', error: auth.error }
  const done = listenerOnAuth(l.value.state, auth.value)
  if (!done.ok) return { at: 'auth', error: done.error }
  return { at: 'done', peer: done.value }
}

describe('handshake', () => {
  test('two nodes with the same secret authenticate each other; the listener learns the dialer', () => {
    const result = run(node(A, ['s3cret-s3cret-s3cret']), node(B, ['s3cret-s3cret-s3cret']))
    expect(result.at).toBe('done')
    expect(result.peer).toMatchObject({ type: 'hello', address: A, incarnation: 'inc-1', auth: 'hmac-sha256' })
  })

  test('without secrets the same frames flow, with no proofs', () => {
    const d = dialerStart(node(A, []), B, nonce())
    const l = listenerOnHello(node(B, []), d.hello, nonce())
    expect(l.ok && l.value.ack.proofs).toEqual([])
    expect(run(node(A, []), node(B, [])).at).toBe('done')
  })

  test('a wrong secret fails at whichever side checks first: the dialer checks the listener', () => {
    expect(run(node(A, ['one-secret-one-secret']), node(B, ['two-secret-two-secret']))).toEqual({
      at: 'ack',
      error: 'listener proof does not match the cluster secret',
    })
  })

  test('a dialer that guesses a proof is refused by the listener', () => {
    const listener = node(B, ['the-secret-the-secret'])
    const d = dialerStart(node(A, ['the-secret-the-secret']), B, nonce())
    const l = listenerOnHello(listener, d.hello, nonce())
    if (!l.ok) throw new Error(l.error)
    const forged: Auth = { type: 'auth', proof: new Uint8Array(32) }
    expect(listenerOnAuth(l.value.state, forged)).toEqual({ ok: false, error: 'dialer proof does not match the cluster secret' })
  })

  test('a mixed secret / no-secret pair refuses each other clearly, in both directions', () => {
    expect(run(node(A, []), node(B, ['the-secret-the-secret']))).toEqual({ at: 'hello', error: 'peer has no cluster secret; this node requires one' })
    expect(run(node(A, ['the-secret-the-secret']), node(B, []))).toEqual({ at: 'hello', error: 'peer uses a cluster secret; this node has none' })
  })

  test('a recorded handshake cannot be replayed: the listener picks a fresh nonce', () => {
    const secret = ['the-secret-the-secret']
    const d = dialerStart(node(A, secret), B, nonce())
    const first = listenerOnHello(node(B, secret), d.hello, nonce())
    if (!first.ok) throw new Error(first.error)
    const recordedAuth = dialerOnAck(d, first.value.ack)
    if (!recordedAuth.ok) throw new Error(recordedAuth.error)
    expect(listenerOnAuth(first.value.state, recordedAuth.value).ok).toBe(true)
    // The attacker replays hello and auth on a new connection.
    const second = listenerOnHello(node(B, secret), d.hello, nonce())
    if (!second.ok) throw new Error(second.error)
    expect(listenerOnAuth(second.value.state, recordedAuth.value).ok).toBe(false)
  })

  test("a listener's proof cannot be reflected as a dialer's proof", () => {
    const secret = ['the-secret-the-secret']
    const d = dialerStart(node(A, secret), B, nonce())
    const l = listenerOnHello(node(B, secret), d.hello, nonce())
    if (!l.ok) throw new Error(l.error)
    expect(listenerOnAuth(l.value.state, { type: 'auth', proof: l.value.ack.proofs[0]! }).ok).toBe(false)
  })

  test('a proof is bound to the addresses: another node answering at the dialled address is refused', () => {
    const secret = ['the-secret-the-secret']
    expect(run(node(A, secret), node(B, secret), 'bun://S@127.0.0.1:9999')).toEqual({
      at: 'ack',
      error: 'dialled bun://S@127.0.0.1:9999 but the node there says it is bun://S@127.0.0.1:1002',
    })
    // and an ack whose address was rewritten to the dialled one fails the proof
    const d = dialerStart(node(A, secret), 'bun://S@127.0.0.1:9999', nonce())
    const l = listenerOnHello(node(B, secret), d.hello, nonce())
    if (!l.ok) throw new Error(l.error)
    const rewritten: HelloAck = { ...l.value.ack, address: 'bun://S@127.0.0.1:9999' }
    expect(dialerOnAck(d, rewritten)).toEqual({ ok: false, error: 'listener proof does not match the cluster secret' })
  })

  test('rotation: nodes that share either of two secrets talk; the listener proves under both', () => {
    const rotated = (address: string) => node(address, ['new-secret-new-secret', 'old-secret-old-secret'])
    const old = (address: string) => node(address, ['old-secret-old-secret'])
    const fresh = (address: string) => node(address, ['new-secret-new-secret'])
    expect(run(rotated(A), old(B)).at).toBe('done')
    expect(run(old(A), rotated(B)).at).toBe('done')
    expect(run(rotated(A), rotated(B)).at).toBe('done')
    expect(run(fresh(A), rotated(B)).at).toBe('done')
    expect(run(rotated(A), fresh(B)).at).toBe('done')
    expect(run(old(A), fresh(B)).at).toBe('ack')
  })

  test('the listener refuses anything but a valid hello first, and anything but auth second', () => {
    const listener = node(B, ['the-secret-the-secret'])
    expect(listenerOnHello(listener, { type: 'chat' }, nonce())).toEqual({ ok: false, error: 'first frame is chat, not hello' })
    expect(listenerOnHello(listener, null, nonce()).ok).toBe(false)
    const d = dialerStart(node(A, ['the-secret-the-secret']), B, nonce())
    expect(listenerOnHello(listener, { ...d.hello, systemName: 'Other' }, nonce())).toEqual({ ok: false, error: 'system name "Other" != "S"' })
    expect(listenerOnHello(listener, { ...d.hello, version: 1 }, nonce()).ok).toBe(false)
    expect(listenerOnHello(listener, { ...d.hello, nonce: new Uint8Array(4) }, nonce()).ok).toBe(false)
    expect(listenerOnHello(listener, { ...d.hello, address: 'bun://Other@127.0.0.1:1' }, nonce()).ok).toBe(false)
    const l = listenerOnHello(listener, d.hello, nonce())
    if (!l.ok) throw new Error(l.error)
    expect(listenerOnAuth(l.value.state, { type: 'presence_join', user: {} })).toEqual({ ok: false, error: 'presence_join before authentication' })
    expect(listenerOnAuth(l.value.state, { type: 'auth', proof: 'x' }).ok).toBe(false)
  })
})
