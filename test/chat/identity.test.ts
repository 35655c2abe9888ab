// Who a socket claims to be: the anonymous rule and signed tokens (real signatures made by jose
// with keys generated here), on an injected clock.
import { describe, expect, test } from 'bun:test'
import { exportSPKI, generateKeyPair, SignJWT, type CryptoKey } from 'jose'
import { anonymous, connectParams, tokenIdentity, tokenKey, type TokenKey } from '../../src/chat/identity'

const SECRET = 'x'.repeat(32)
const NOW_S = 1_700_000_000
const now = () => NOW_S * 1000

async function sign(claims: Record<string, unknown>, key: CryptoKey | Uint8Array = new TextEncoder().encode(SECRET), alg = 'HS256') {
  return new SignJWT(claims).setProtectedHeader({ alg }).sign(key)
}
async function keyOf(from: Parameters<typeof tokenKey>[0]): Promise<TokenKey> {
  const r = await tokenKey(from)
  if (!r.ok) throw new Error(r.error)
  return r.value
}
const params = (token: string[], username: string[] = []) => ({ token, username })

describe('connectParams', () => {
  test('keeps every value of a repeated parameter; never throws on odd URLs', () => {
    expect(connectParams('/ws/chat?username=a&username=b&token=t')).toEqual({ username: ['a', 'b'], token: ['t'] })
    expect(connectParams('http://h/ws/chat?username=%E2%80%AE')).toEqual({ username: ['\u202e'], token: [] })
    expect(connectParams('http://[bad')).toEqual({ username: [], token: [] })
  })
})

describe('anonymous', () => {
  test('exactly one username parameter', async () => {
    expect(await anonymous(params([], ['alice']))).toEqual({ ok: true, value: 'alice' })
    expect(await anonymous(params([], []))).toEqual({ ok: false, error: { code: 4400, reason: 'username is required' } })
    expect(await anonymous(params([], ['a', 'b']))).toEqual({ ok: false, error: { code: 4400, reason: 'username given more than once' } })
  })
})

describe('tokenIdentity (HS256)', async () => {
  const identify = tokenIdentity(await keyOf({ secret: SECRET }), now)
  const reason = async (token: string[]) => {
    const r = await identify(params(token))
    if (r.ok) throw new Error(`accepted as ${r.value}`)
    expect(r.error.code).toBe(4401)
    return r.error.reason
  }

  test('the name claim, else sub; a username parameter is ignored', async () => {
    expect(await identify(params([await sign({ name: '김철수', sub: 'u1', exp: NOW_S + 60 })], ['mallory']))).toEqual({ ok: true, value: '김철수' })
    expect(await identify(params([await sign({ sub: 'bob', exp: NOW_S + 60 })]))).toEqual({ ok: true, value: 'bob' })
    expect(await reason([await sign({ exp: NOW_S + 60 })])).toContain('neither a name nor a sub')
  })

  test('missing, repeated, expired, not yet valid, without exp, wrongly signed, alg none, garbage', async () => {
    expect(await reason([])).toBe('token required')
    const good = await sign({ sub: 'bob', exp: NOW_S + 60 })
    expect(await reason([good, good])).toBe('token given more than once')
    expect(await reason([await sign({ sub: 'bob', exp: NOW_S - 60 })])).toBe('token expired')
    expect(await reason([await sign({ sub: 'bob', exp: NOW_S + 60, nbf: NOW_S + 30 })])).toContain('"nbf"')
    expect(await reason([await sign({ sub: 'bob' })])).toContain('"exp"')
    expect(await reason([await sign({ sub: 'bob', exp: NOW_S + 60 }, new TextEncoder().encode('y'.repeat(32)))])).toBe('token signature does not verify')
    const [header, payload] = good.split('.')
    const none = `${btoa(JSON.stringify({ alg: 'none' })).replace(/=/g, '')}.${payload}.`
    expect(await reason([none])).toContain('algorithm not allowed')
    expect(await reason([`${header}.${payload}.AAAA`])).toBe('token signature does not verify')
    expect(await reason(['not a token'])).toBe('malformed token')
    expect(await reason(['a'.repeat(9000)])).toBe('token too long')
  })

  test('exp within the clock tolerance still passes (issuer and node clocks differ a little)', async () => {
    expect((await identify(params([await sign({ sub: 'bob', exp: NOW_S - 3 })]))).ok).toBe(true)
  })
})

describe('tokenIdentity with a public key', () => {
  for (const alg of ['RS256', 'ES256'] as const) {
    test(`${alg}: tokens signed by the private key pass, an HS256 token made with the public key text does not`, async () => {
      const pair = await generateKeyPair(alg, { extractable: true })
      const pem = await exportSPKI(pair.publicKey)
      const identify = tokenIdentity(await keyOf({ publicKeyPem: pem }), now)
      expect(await identify(params([await sign({ name: 'alice', exp: NOW_S + 60 }, pair.privateKey, alg)]))).toEqual({ ok: true, value: 'alice' })
      // The classic confusion attack: HMAC keyed with the public key's text.
      const forged = await sign({ name: 'alice', exp: NOW_S + 60 }, new TextEncoder().encode(pem), 'HS256')
      expect(await identify(params([forged]))).toMatchObject({ ok: false, error: { code: 4401 } })
    })
  }

  test('a file that is not a usable public key is a clear error', async () => {
    expect(await tokenKey({ publicKeyPem: 'hello' })).toMatchObject({ ok: false, error: expect.stringContaining('not a PEM public key') })
    const ed = await generateKeyPair('EdDSA', { extractable: true })
    expect(await tokenKey({ publicKeyPem: await exportSPKI(ed.publicKey) })).toMatchObject({ ok: false, error: expect.stringContaining('unsupported') })
  })
})
