import { describe, expect, test } from 'bun:test'
import { createLogger } from '../src/log'

const capture = (format: 'text' | 'json', level: 'debug' | 'info' | 'warn' | 'error' = 'info') => {
  const lines: string[] = []
  const log = createLogger({ format, level, node: 'bun://S@127.0.0.1:2551', write: (l) => lines.push(l), now: () => Date.UTC(2026, 0, 2, 3, 4, 5) })
  return { log, lines }
}

describe('logger', () => {
  test('text: a timestamped sentence, the level shown when it is not info', () => {
    const { log, lines } = capture('text')
    log('member up: x', { event: 'member_up', member: 'x' })
    log('peer refused', { level: 'warn', event: 'peer_refused' })
    expect(lines).toEqual(['2026-01-02T03:04:05.000Z member up: x', '2026-01-02T03:04:05.000Z WARN peer refused'])
  })

  test('json: one object a line with time, level, node, event, the sentence and the fields', () => {
    const { log, lines } = capture('json')
    log('member up: x', { event: 'member_up', member: 'x', term: 3 })
    log('plain')
    expect(lines.map((l) => JSON.parse(l))).toEqual([
      { time: '2026-01-02T03:04:05.000Z', level: 'info', node: 'bun://S@127.0.0.1:2551', event: 'member_up', msg: 'member up: x', member: 'x', term: 3 },
      { time: '2026-01-02T03:04:05.000Z', level: 'info', node: 'bun://S@127.0.0.1:2551', event: 'message', msg: 'plain' },
    ])
  })

  test('lines below the level are dropped', () => {
    const { log, lines } = capture('text', 'warn')
    log('debug', { level: 'debug' })
    log('info')
    log('warn', { level: 'warn' })
    log('error', { level: 'error' })
    expect(lines.map((l) => l.split(' ').at(-1))).toEqual(['warn', 'error'])
  })
})
