import { describe, expect, test } from 'bun:test'
import { NAMES_IN_FRAME, lineFrame, parseClientMessage, systemMessage, validateUsername } from '../../src/chat/protocol'

describe('validateUsername', () => {
  test('accepts letters and digits of any script, spaces, _ - .', () => {
    for (const name of ['alice', '민수', 'José_1', 'a.b-c d', 'Ωμέγα', '李雷', 'x'.repeat(32)]) {
      expect(validateUsername(name)).toEqual({ ok: true, value: name })
    }
  })
  test('trims and normalizes', () => {
    expect(validateUsername('  bob  ')).toEqual({ ok: true, value: 'bob' })
    expect(validateUsername('Jose\u0301')).toEqual({ ok: true, value: 'José' })
  })
  test('refuses missing, blank, long, control and symbol characters', () => {
    for (const bad of [undefined, '', '   ', 'x'.repeat(33), 'a\tb', 'a\nb', 'a\u0000', '<script>', 'a/b', 'emoji😀', 'a"b']) {
      expect(validateUsername(bad).ok).toBe(false)
    }
  })
  test('counts characters, not UTF-16 units', () => {
    expect(validateUsername('가'.repeat(32)).ok).toBe(true)
  })
})

describe('parseClientMessage', () => {
  test('text is a chat message exactly as sent', () => {
    for (const text of ['hello', '007', 'true', '[1,2]', '"quoted"', '{"a":1}', '{not json', '  padded  ', '']) {
      expect(parseClientMessage(text)).toEqual({ ok: true, value: { type: 'chat', message: text } })
    }
  })
  test('a JSON object with a type is a typed message', () => {
    expect(parseClientMessage('{"type":"chat","message":"hi"}')).toEqual({ ok: true, value: { type: 'chat', message: 'hi' } })
    expect(parseClientMessage('{"type":"chat","message":"007"}')).toEqual({ ok: true, value: { type: 'chat', message: '007' } })
  })
  test('a typed chat message may carry a clientMsgId: 1 to 64 letters, digits or -_.:', () => {
    const id = '0f8e2a1c-3b4d-4e5f-8a9b-0c1d2e3f4a5b'
    const typed = (clientMsgId: unknown) => JSON.stringify({ type: 'chat', message: 'hi', clientMsgId })
    expect(parseClientMessage(typed(id))).toEqual({ ok: true, value: { type: 'chat', message: 'hi', clientMsgId: id } })
    expect(parseClientMessage(typed('a:b.c_d')).ok).toBe(true)
    for (const bad of ['', 'x'.repeat(65), 'with space', 'slash/', 'ünï', 7, null]) {
      expect(parseClientMessage(typed(bad)).ok).toBe(false)
    }
  })
  test('unknown types, typed messages without text, and binary frames are refused', () => {
    expect(parseClientMessage('{"type":"admin"}').ok).toBe(false)
    expect(parseClientMessage('{"type":"chat","message":5}').ok).toBe(false)
    expect(parseClientMessage(new Uint8Array([1]))).toEqual({ ok: false, error: 'binary frames are not supported' })
    expect(parseClientMessage(42).ok).toBe(false)
  })
})

describe('systemMessage', () => {
  test('English and Korean texts', () => {
    expect(systemMessage('en', 'join', 'alice', 1)).toEqual({ type: 'system', message: 'alice joined the chat', timestamp: 1, event: 'join', username: 'alice' })
    expect(systemMessage('en', 'leave', 'alice', 1).message).toBe('alice left the chat')
    expect(systemMessage('ko', 'join', '민수', 1).message).toBe('민수 님이 채팅에 참여했습니다')
    expect(systemMessage('ko', 'leave', '민수', 1).message).toBe('민수 님이 채팅을 떠났습니다')
  })
})

describe('system lines about several users, and transcript lines as frames', () => {
  test('a line about several users: the first three names in the text, then a count; up to NAMES_IN_FRAME names listed, and how many', () => {
    expect(systemMessage('en', 'leave', ['a', 'b'], 5, 9)).toEqual({ type: 'system', id: 9, message: 'a and b left the chat', timestamp: 5, event: 'leave', username: 'a', usernames: ['a', 'b'], count: 2 })
    const storm = Array.from({ length: 1000 }, (_, i) => `u${i}`)
    expect(systemMessage('en', 'join', storm, 5, 10)).toEqual({ type: 'system', id: 10, message: 'u0, u1, u2 and 997 others joined the chat', timestamp: 5, event: 'join', username: 'u0', usernames: storm.slice(0, NAMES_IN_FRAME), count: 1000 })
    expect(systemMessage('en', 'leave', ['a', 'b', 'c'], 5).message).toBe('a, b and c left the chat')
    expect(systemMessage('en', 'leave', ['a', 'b', 'c', 'd', 'e'], 5).message).toBe('a, b, c and 2 others left the chat')
    expect(systemMessage('ko', 'leave', ['a', 'b', 'c', 'd'], 5).message).toBe('a, b, c 외 1명 님이 채팅을 떠났습니다')
    expect(systemMessage('en', 'join', ['solo'], 5)).toEqual({ type: 'system', message: 'solo joined the chat', timestamp: 5, event: 'join', username: 'solo' })
  })
  test('lineFrame: chat keeps every documented field and gains its id; system lines read in the node\'s language', () => {
    expect(lineFrame('en', { type: 'chat', id: 12, username: 'alice', message: 'hi', nodeAddress: 'bun://S@h:1', timestamp: 3 })).toEqual({ type: 'chat', id: 12, username: 'alice', message: 'hi', nodeAddress: 'bun://S@h:1', timestamp: 3 })
    expect(lineFrame('ko', { type: 'system', id: 13, event: 'join', usernames: ['민수'], timestamp: 4 })).toEqual({ type: 'system', id: 13, message: '민수 님이 채팅에 참여했습니다', timestamp: 4, event: 'join', username: '민수' })
  })
})
