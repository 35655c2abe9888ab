// The one shape of a fallible result in this codebase: checks at the boundaries (config, frames,
// client input, usernames) return it instead of throwing, so callers narrow on `ok`.
export type Result<T, E = string> = { ok: true; value: T } | { ok: false; error: E }

export const ok = <T>(value: T): { ok: true; value: T } => ({ ok: true, value })
export const err = <E>(error: E): { ok: false; error: E } => ({ ok: false, error })
