// The check every peer frame goes through must refuse, never throw, whatever the peer decoded to.
import { describe, expect, test } from 'bun:test'
import { validateRaftMessage } from '../../src/cluster/messages'

describe('validatorFor', () => {
  // Found by the live fuzzer: `{type: {toString: 1}}` made String(type) throw "No default value"
  // inside the validator (the transport's catch-all still closed the connection).
  test('a `type` that cannot be turned into a string is refused, not thrown', () => {
    for (const type of [{ toString: 1 }, { valueOf: 'x', toString: null }, Object.create(null), [1], 5n]) {
      const result = validateRaftMessage({ type })
      expect(result.ok).toBe(false)
    }
    expect(validateRaftMessage({ type: { toString: 1 } })).toEqual({ ok: false, error: 'unknown message type of kind object' })
  })
})
