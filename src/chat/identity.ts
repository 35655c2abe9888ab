// Who a new chat socket claims to be, from its URL: the `username` parameter when the node is
// anonymous, or the name in a signed token (`token`, a JWT) when it requires one. This only says
// who is claimed; the gateway then checks the name with the username rule and for uniqueness.
//
// The raw URL is read rather than a framework's query object, because frameworks keep one value
// of a repeated parameter (Elysia keeps the last) and `?username=a&username=b` must be refused.
import { createPublicKey } from 'node:crypto'
import { errors, importSPKI, jwtVerify, type CryptoKey } from 'jose'
import { err, ok, type Result } from '../result'
import { CloseCode } from './protocol'

export type Refusal = { code: number; reason: string }
export type Claim = Result<string, Refusal>

export interface ConnectParams {
  /** Every value of each parameter, in order. */
  username: string[]
  token: string[]
}

/** Resolves a claimed name or a refusal; never rejects. */
export type Identify = (params: ConnectParams) => Promise<Claim>

/** A JWT longer than this is refused unread (a token is a few hundred bytes). */
export const TOKEN_CHARS_MAX = 8192
/** Skew allowed between the token issuer's clock and ours, for `exp` and `nbf`. */
export const CLOCK_TOLERANCE_S = 5

export function connectParams(url: string): ConnectParams {
  let search: URLSearchParams
  try {
    search = new URL(url, 'http://x').searchParams
  } catch {
    search = new URLSearchParams()
  }
  return { username: search.getAll('username'), token: search.getAll('token') }
}

const badUsername = (reason: string): Claim => err({ code: CloseCode.badUsername, reason })
const unauthorized = (reason: string): Claim => err({ code: CloseCode.unauthorized, reason })

/** No tokens: the user names themself, with exactly one `username` parameter. */
export const anonymous: Identify = async ({ username }) => {
  if (username.length === 0) return badUsername('username is required')
  if (username.length > 1) return badUsername('username given more than once')
  return ok(username[0]!)
}

export interface TokenKey {
  key: CryptoKey | Uint8Array
  algorithms: string[]
}

/** The key tokens must be signed with: an HS256 secret, or a PEM public key (RSA: RS256, P-256: ES256). */
export async function tokenKey(from: { secret: string } | { publicKeyPem: string }): Promise<Result<TokenKey>> {
  if ('secret' in from) return ok({ key: new TextEncoder().encode(from.secret), algorithms: ['HS256'] })
  let alg: 'RS256' | 'ES256'
  try {
    const key = createPublicKey(from.publicKeyPem)
    if (key.asymmetricKeyType === 'rsa') alg = 'RS256'
    else if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') alg = 'ES256'
    else return err(`unsupported public key type ${key.asymmetricKeyType} (expected RSA or EC P-256)`)
  } catch (error) {
    return err(`not a PEM public key: ${(error as Error).message}`)
  }
  try {
    return ok({ key: await importSPKI(from.publicKeyPem, alg), algorithms: [alg] })
  } catch (error) {
    return err(`cannot import the public key: ${(error as Error).message}`)
  }
}

/**
 * Tokens required: exactly one `token` parameter, a JWT signed with `key`, with an `exp` claim
 * not yet passed at `now()`. The name is the `name` claim, else `sub`. Any `username` parameter
 * is ignored: the token decides.
 */
export function tokenIdentity(key: TokenKey, now: () => number): Identify {
  return async ({ token }) => {
    if (token.length === 0) return unauthorized('token required')
    if (token.length > 1) return unauthorized('token given more than once')
    const jwt = token[0]!
    if (jwt.length > TOKEN_CHARS_MAX) return unauthorized('token too long')
    try {
      const { payload } = await jwtVerify(jwt, key.key, {
        algorithms: key.algorithms,
        currentDate: new Date(now()),
        requiredClaims: ['exp'],
        clockTolerance: CLOCK_TOLERANCE_S,
      })
      const name = typeof payload.name === 'string' && payload.name !== '' ? payload.name : payload.sub
      if (typeof name !== 'string' || name === '') return unauthorized('token has neither a name nor a sub claim')
      return ok(name)
    } catch (error) {
      return unauthorized(tokenProblem(error))
    }
  }
}

/** A short reason for the client; never the token itself. */
function tokenProblem(error: unknown): string {
  if (error instanceof errors.JWTExpired) return 'token expired'
  if (error instanceof errors.JWTClaimValidationFailed) return `token claim "${error.claim}" is not valid (${error.reason})`
  if (error instanceof errors.JWSSignatureVerificationFailed) return 'token signature does not verify'
  if (error instanceof errors.JOSEAlgNotAllowed) return `token algorithm not allowed (expected ${'HS256, RS256 or ES256'})`
  return 'malformed token'
}
