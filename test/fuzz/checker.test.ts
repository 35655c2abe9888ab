// The checker's judgement on its own: a fuzz run can only fail on lost or forged messages if this
// notices them.
import { describe, expect, test } from 'bun:test'
import { checkerText, verifyDeliveries, type Received } from './checker'

const A = { username: 'a', nodeAddress: 'bun://S@127.0.0.1:1', sent: 3 }
const B = { username: 'b', nodeAddress: 'bun://S@127.0.0.1:2', sent: 2 }
const from = (s: typeof A, ...ns: number[]): Received[] => ns.map((n) => ({ username: s.username, message: checkerText(n), nodeAddress: s.nodeAddress }))

describe('verifyDeliveries', () => {
  test('every message once and in order, own ones included: no problem', () => {
    const received = new Map([
      ['a', [...from(A, 1, 2), ...from(B, 1), ...from(A, 3), ...from(B, 2)]],
      ['b', [...from(B, 1, 2), ...from(A, 1, 2, 3)]],
    ])
    expect(verifyDeliveries([A, B], received)).toEqual({ problems: [], delivered: 10, expected: 10 })
  })

  test('a missing message is reported with its number', () => {
    const report = verifyDeliveries([A, B], new Map([['b', [...from(B, 1, 2), ...from(A, 1, 3)]]]))
    expect(report.problems).toEqual(['b missed 1 of 3 from a: 2'])
  })

  test('a message nobody got, its sender told it was refused (overloaded), is a refusal; one more missing is a loss', () => {
    const received = new Map([
      ['a', [...from(A, 1, 3), ...from(B, 1, 2)]],
      ['b', [...from(B, 1, 2), ...from(A, 1, 3)]],
    ])
    expect(verifyDeliveries([{ ...A, refused: 1 }, B], received)).toEqual({ problems: [], delivered: 8, expected: 8 })
    expect(verifyDeliveries([A, B], received).problems).toEqual(['a missed 1 of 3 from a: 2', 'b missed 1 of 3 from a: 2'])
    // Got by someone: lost at the other, whatever the sender was refused.
    const partly = new Map([
      ['a', [...from(A, 1, 2, 3), ...from(B, 1, 2)]],
      ['b', [...from(B, 1, 2), ...from(A, 1, 3)]],
    ])
    expect(verifyDeliveries([{ ...A, refused: 1 }, B], partly).problems).toEqual(['b missed 1 of 3 from a: 2'])
  })

  test('a duplicate and a reordering are reported', () => {
    const report = verifyDeliveries([A], new Map([['a', from(A, 1, 3, 2, 3)]]))
    expect(report.problems).toEqual(['a got 1 duplicate(s) from a: 3', "a got a's messages out of order 1 time(s)"])
  })

  test('a message from a checker name that it never sent is a forgery', () => {
    const forged = [{ username: 'a', message: 'hello', nodeAddress: A.nodeAddress }, ...from({ ...A, sent: 9 }, 9)]
    const report = verifyDeliveries([A], new Map([['a', [...from(A, 1, 2, 3), ...forged]]]))
    expect(report.problems).toEqual(['a got a message from a it never sent: "hello"', 'a got a message from a it never sent: "check 9"'])
  })

  test("a checker's message marked with another node is misattributed", () => {
    const moved = from(A, 1, 2, 3).map((r, i) => (i === 1 ? { ...r, nodeAddress: B.nodeAddress } : r))
    const report = verifyDeliveries([A], new Map([['a', moved]]))
    expect(report.problems).toEqual([`a got a's #2 marked from ${B.nodeAddress}, not ${A.nodeAddress}`])
  })

  test('a message the sender was told was refused (overloaded) is excused only if it is missing everywhere, and only as many as were refused', () => {
    const refusedOnce = { ...A, refused: 1 }
    const gone = new Map([['a', from(A, 1, 3)], ['b', from(A, 1, 3)]])
    expect(verifyDeliveries([refusedOnce], gone)).toEqual({ problems: [], delivered: 4, expected: 4 })
    // Delivered to one receiver and not the other: a loss, whatever the refusals.
    const partly = new Map([['a', from(A, 1, 2, 3)], ['b', from(A, 1, 3)]])
    expect(verifyDeliveries([refusedOnce], partly).problems).toEqual(['b missed 1 of 3 from a: 2'])
    // Two missing everywhere, one refusal: neither is excused.
    const two = new Map([['a', from(A, 1)], ['b', from(A, 1)]])
    expect(verifyDeliveries([refusedOnce], two).problems).toEqual(['a missed 2 of 3 from a: 2, 3', 'b missed 2 of 3 from a: 2, 3'])
  })
})
