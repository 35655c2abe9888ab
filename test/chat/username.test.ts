// The username rule of src/chat/username.ts, sentence by sentence, with the names the attack
// report used (Cyrillic look-alike, fullwidth, Hangul filler, stacked marks).
import { describe, expect, test } from 'bun:test'
import { usernameKey, validateUsername } from '../../src/chat/username'

const accepted = (name: string) => {
  const r = validateUsername(name)
  if (!r.ok) throw new Error(`${JSON.stringify(name)} refused: ${r.error}`)
  return r.value
}
const refusal = (name: unknown) => {
  const r = validateUsername(name)
  if (r.ok) throw new Error(`${JSON.stringify(name)} accepted as ${JSON.stringify(r.value)}`)
  return r.error
}

describe('validateUsername', () => {
  test('names of many scripts and accented Latin are accepted as typed', () => {
    for (const name of ['김철수', 'José', 'Việt Nam', 'Ωμέγα', 'алиса', '李雷', 'ひらがなカタカナ漢字', 'ที่ดิน', 'a.b-c_d 1']) expect(accepted(name)).toBe(name)
  })
  test('NFKC: fullwidth and compatibility forms become their plain letters', () => {
    expect(accepted('ａｌｉｃｅ')).toBe('alice')
    expect(accepted('Jose\u0301')).toBe('José')
    expect(accepted('ﬁx')).toBe('fix')
  })
  test('mixed scripts: Latin with Cyrillic or Greek is refused; Latin with Han and Hangul or kana is allowed', () => {
    expect(refusal('аlice')).toContain('mixes scripts')
    expect(refusal('pοlice')).toContain('mixes scripts') // Greek omicron
    expect(accepted('김철수abc')).toBe('김철수abc')
    expect(accepted('abcカタ漢')).toBe('abcカタ漢')
    expect(refusal('김철수カタ')).toContain('mixes scripts') // Hangul with kana: no such writing system
  })
  test('invisible characters are refused, alone or inside a name', () => {
    for (const name of ['\u3164', 'ali\u3164ce', 'a\uFFA0b', 'a\u115Fb', 'a\u034Fb', 'a\u180Bb']) expect(refusal(name)).toContain('invisible')
    expect(refusal('a\u200Bb')).toContain('only letters') // a format character, not a letter at all
  })
  test('at most 3 non-spacing marks on one letter, never one mark twice', () => {
    expect(refusal('a' + '\u0301'.repeat(31))).toContain('marks')
    expect(refusal('a\u0301\u0301')).toContain('marks')
    expect(refusal('a\u0300\u0301\u0302\u0303')).toContain('marks')
    expect(accepted('a\u0300\u0301\u0302')).toBe('\u00E0\u0301\u0302') // NFKC composes the first
  })
  test('refuses missing, blank, long, punctuation-only and symbol names', () => {
    for (const bad of [undefined, null, 7, '', '   ', 'x'.repeat(33), '...', '-', 'a/b', 'emoji😀', 'x'.repeat(10_000)]) expect(refusal(bad)).toBeString()
  })
})

describe('usernameKey: look-alikes share a key', () => {
  test('whole-script confusables and letter look-alikes collide', () => {
    expect(usernameKey('асе')).toBe(usernameKey('ace')) // all Cyrillic vs all Latin
    expect(usernameKey('m')).toBe(usernameKey('rn'))
    expect(usernameKey('bill')).toBe(usernameKey('biII'))
    expect(usernameKey('ａｌｉｃｅ')).toBe(usernameKey('alice'))
    expect(usernameKey('a  b')).toBe(usernameKey('a b'))
    expect(usernameKey('José')).toBe(usernameKey('Jose\u0301'))
  })
  test('different names keep different keys', () => {
    expect(usernameKey('alice')).not.toBe(usernameKey('alicia'))
    expect(usernameKey('김철수')).not.toBe(usernameKey('김철호'))
    expect(usernameKey('José')).not.toBe(usernameKey('Jose'))
  })
})
