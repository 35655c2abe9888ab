// Property tests (fast-check) for what users send: socket frames, usernames, tokens, and the
// command line. Arbitrary input never throws out of the boundary and always gets the documented
// answer. A failure prints the seed and the shrunk counterexample; rerun with that seed.
import { describe, expect, test } from 'bun:test'
import fc from 'fast-check'
import { SignJWT } from 'jose'
import { parseConfig } from '../../src/config'
import { anonymous, connectParams, tokenIdentity, tokenKey } from '../../src/chat/identity'
import { hasForbiddenControl, parseClientMessage } from '../../src/chat/protocol'
import { usernameKey, validateUsername, USERNAME_MAX } from '../../src/chat/username'

const RUNS = { numRuns: 300 }
const SECRET = 's'.repeat(32)
const NOW_S = 1_700_000_000

/** Any text frame (often JSON, sometimes a typed message), plus bytes and values a socket never hands over. */
const frameData = fc.oneof(
  fc.string({ unit: 'binary' }),
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc.record({ type: fc.oneof(fc.constant('chat'), fc.string()), message: fc.anything(), clientMsgId: fc.oneof(fc.string(), fc.uuid()) }, { requiredKeys: [] }).map((v) => JSON.stringify(v) ?? ''),
  fc.uint8Array(),
  fc.jsonValue(),
)

describe('parseClientMessage', () => {
  test('never throws; text is chat exactly as sent unless it is a JSON object with a type; typed chat keeps its text; anything else is refused', () => {
    fc.assert(
      fc.property(frameData, (data) => {
        const r = parseClientMessage(data)
        if (typeof data !== 'string') return expect(r).toEqual({ ok: false, error: 'binary frames are not supported' })
        let typed: unknown
        try {
          typed = JSON.parse(data)
        } catch {}
        const isTyped = typeof typed === 'object' && typed !== null && !Array.isArray(typed) && 'type' in typed
        if (!isTyped) return expect(r).toEqual({ ok: true, value: { type: 'chat', message: data } })
        const t = typed as { type: unknown; message?: unknown; clientMsgId?: unknown }
        if (r.ok) {
          expect(t.type).toBe('chat')
          expect(r.value.message).toBe(t.message as string)
          expect(r.value.clientMsgId).toBe(t.clientMsgId as string | undefined)
        } else expect(r.error).toMatch(/unknown message|clientMsgId/)
      }),
      RUNS,
    )
  })
  test('hasForbiddenControl: exactly C0/C1 controls other than \\n and \\t, and bidi overrides', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (text) => {
        const expected = [...text].some((c) => {
          const n = c.codePointAt(0)!
          return (n < 0x20 && c !== '\n' && c !== '\t') || (n >= 0x7f && n <= 0x9f) || (n >= 0x202a && n <= 0x202e)
        })
        expect(hasForbiddenControl(text)).toBe(expected)
      }),
      RUNS,
    )
  })
})

/** Strings biased towards the hard cases: scripts that mix, marks, fillers, fullwidth forms. */
const trickyChar = fc.constantFrom('a', 'l', 'I', '1', '0', 'O', 'а', 'о', 'е', 'ο', 'ａ', '\u3164', '\u115F', '\u0301', '\u0308', '\u200B', '\u202E', '김', '철', '漢', 'カ', ' ', '.', '_', '-', '\u0000', '\n', 'é', 'ß')
const usernameInput = fc.oneof(fc.string({ unit: 'binary', maxLength: 40 }), fc.string({ unit: trickyChar, maxLength: 40 }), fc.anything())

describe('validateUsername', () => {
  test('never throws; an accepted name is NFKC, trimmed, at most 32 characters, and accepted again as itself', () => {
    fc.assert(
      fc.property(usernameInput, (raw) => {
        const r = validateUsername(raw)
        if (!r.ok) return expect(r.error.length).toBeGreaterThan(0)
        const name = r.value
        expect(name).toBe(name.normalize('NFKC').trim())
        expect([...name].length).toBeLessThanOrEqual(USERNAME_MAX)
        expect(/[\p{Cc}\p{Cf}\p{Default_Ignorable_Code_Point}]/u.test(name)).toBe(false)
        expect(validateUsername(name)).toEqual({ ok: true, value: name })
      }),
      RUNS,
    )
  })
  test('usernameKey never throws and is stable under NFKC and NFD (peers may send either form)', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.oneof(fc.constant('x'), trickyChar, fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })), maxLength: 40 }), (name) => {
        const key = usernameKey(name)
        expect(usernameKey(name.normalize('NFKC'))).toBe(key)
        expect(usernameKey(name.normalize('NFD'))).toBe(key)
      }),
      RUNS,
    )
  })
  test('a fullwidth spelling of an accepted ASCII name collides with it', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/), (name) => {
        const full = [...name].map((c) => String.fromCodePoint(c.codePointAt(0)! + 0xfee0)).join('')
        const r = validateUsername(full)
        expect(r.ok && usernameKey(r.value)).toBe(usernameKey(name))
      }),
      RUNS,
    )
  })
})

describe('the token path', async () => {
  const key = await tokenKey({ secret: SECRET })
  if (!key.ok) throw new Error(key.error)
  const identify = tokenIdentity(key.value, () => NOW_S * 1000)
  const refusedWith4401 = (r: Awaited<ReturnType<typeof identify>>) => {
    expect(r.ok).toBe(false)
    if (!r.ok) {
      expect(r.error.code).toBe(4401)
      expect(r.error.reason).toMatch(/^(token required|token given more than once|token too long|token expired|token claim "\w+" is not valid|token signature does not verify|token algorithm not allowed|malformed token|token has neither)/)
    }
  }

  test('arbitrary strings and URLs never throw and are refused with 4401 and a documented reason', async () => {
    const parts = fc.string({ unit: fc.constantFrom('e', 'y', 'J', '.', '-', '_', 'A', '=', '%', '\u0000'), maxLength: 60 })
    await fc.assert(
      fc.asyncProperty(fc.array(fc.oneof(fc.string({ unit: 'binary' }), parts), { maxLength: 3 }), async (token) => refusedWith4401(await identify({ token, username: [] }))),
      { numRuns: 200 },
    )
    fc.assert(fc.property(fc.string({ unit: 'binary' }), (url) => void connectParams(url)), RUNS)
  })

  test('structurally valid tokens with arbitrary claims: a name when the claims say so, else a documented 4401', async () => {
    const claim = fc.oneof(fc.string(), fc.integer(), fc.constant(null), fc.boolean(), fc.array(fc.string(), { maxLength: 2 }))
    const claims = fc.record(
      { name: claim, sub: claim, exp: fc.oneof(fc.integer({ min: NOW_S - 1000, max: NOW_S + 1000 }), claim), nbf: fc.integer({ min: NOW_S - 1000, max: NOW_S + 1000 }) },
      { requiredKeys: [] },
    )
    await fc.assert(
      fc.asyncProperty(claims, fc.boolean(), async (c, rightKey) => {
        const jwt = await new SignJWT(c as Record<string, unknown>).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(rightKey ? SECRET : 'w'.repeat(32)))
        const r = await identify({ token: [jwt], username: [] })
        const valid = rightKey && typeof c.exp === 'number' && c.exp >= NOW_S - 5 && (c.nbf === undefined || c.nbf <= NOW_S + 5)
        const name = typeof c.name === 'string' && c.name !== '' ? c.name : typeof c.sub === 'string' && c.sub !== '' ? c.sub : null
        if (valid && name !== null) expect(r).toEqual({ ok: true, value: name })
        else refusedWith4401(r)
      }),
      { numRuns: 150 },
    )
  })

  test('anonymous: one username parameter is passed through, anything else is a 4400', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.string(), { maxLength: 3 }), async (username) => {
        const r = await anonymous({ username, token: [] })
        if (username.length === 1) expect(r).toEqual({ ok: true, value: username[0]! })
        else expect(r).toMatchObject({ ok: false, error: { code: 4400 } })
      }),
      RUNS,
    )
  })
})

describe('parseConfig', () => {
  const flags = ['--host', '--http-port', '--cluster-port', '--seeds', '--rate-limit', '--rate-burst', '--allowed-origins', '--auth-jwt-secret', '--auth-jwt-public-key', '--max-connections', '--max-connections-per-ip', '--heartbeat-ms', '--lang', '--help', '--nope']
  const arg = fc.oneof(fc.constantFrom(...flags), fc.string({ unit: 'binary', maxLength: 20 }), fc.constantFrom('0', '1', '80', '65536', 'http://a.b', 'x'.repeat(40), 'a:1,b:2'))
  const envNames = ['HTTP_PORT', 'RATE_LIMIT', 'RATE_BURST', 'ALLOWED_ORIGINS', 'AUTH_JWT_SECRET', 'AUTH_JWT_PUBLIC_KEY', 'SEED_NODES', 'MAX_CONNECTIONS']
  test('arbitrary argv and environment never throw: a config, the help, or one clear error line', () => {
    fc.assert(
      fc.property(fc.array(arg, { maxLength: 8 }), fc.dictionary(fc.constantFrom(...envNames), fc.oneof(fc.string({ unit: 'binary', maxLength: 12 }), arg)), (argv, env) => {
        const r = parseConfig(argv, env)
        if (!r.ok) {
          expect(r.error.length).toBeGreaterThan(0)
          expect(r.error).not.toContain('\n')
        } else if ('config' in r.value) {
          const c = r.value.config
          expect(c.rateBurst).toBeGreaterThanOrEqual(1)
          expect(c.rateLimit).toBeGreaterThanOrEqual(0)
          expect(c.authJwtSecret === null || c.authJwtPublicKey === null).toBe(true)
          if (c.authJwtSecret !== null) expect(c.authJwtSecret.length).toBeGreaterThanOrEqual(32)
        }
      }),
      { numRuns: 500 },
    )
  })
})
