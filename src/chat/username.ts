// The username rule, and the key that makes look-alike names collide. Pure: no clock, no I/O.
//
// A name is taken as typed after NFKC (so fullwidth "ａｌｉｃｅ" becomes "alice") and trimming; it
// is refused unless all of these hold:
//   1. 1–32 characters (code points); letters and digits of any script, combining marks, space,
//      "_", "-", "." only, with at least one letter or digit;
//   2. no invisible character (Unicode's Default_Ignorable_Code_Point: fillers such as U+3164,
//      joiners, variation selectors);
//   3. at most 3 non-spacing marks on one letter, none of them twice (UTS #39 §5.4), after NFD;
//   4. UTS #39 "highly restrictive" (§5.2): one script, or Latin with Han and Hiragana/Katakana,
//      with Han and Bopomofo, or with Han and Hangul. Common and Inherited characters (digits,
//      space, punctuation) go with any script. So "аlice" (Cyrillic а + Latin) is refused, while
//      "김철수", "José", "李雷" and "Ωμέγα" are fine.
// Two names that pass can still look alike as wholes ("асе" in Cyrillic, "ace" in Latin; "rn" and
// "m"). `usernameKey` is UTS #39's skeleton (NFD, the confusables mapping of Unicode's
// confusables.txt via `unhomoglyph`, NFD again) with runs of spaces collapsed: names with one key
// are one name for presence and uniqueness.
import unhomoglyph from 'unhomoglyph'
import { err, ok, type Result } from '../result'

export const USERNAME_MAX = 32
export const MARKS_PER_LETTER_MAX = 3
/** Input longer than this is refused before normalising it (NFKC on megabytes costs time). */
const RAW_CHARS_MAX = 256

const ALLOWED = /^[\p{L}\p{M}\p{N} _.-]+$/u
const HAS_LETTER_OR_DIGIT = /[\p{L}\p{N}]/u
const INVISIBLE = /\p{Default_Ignorable_Code_Point}/u
const NONSPACING_MARK = /^[\p{Mn}\p{Me}]$/u
const ANY_SCRIPT = /^[\p{Script_Extensions=Zyyy}\p{Script_Extensions=Zinh}]$/u

export function validateUsername(raw: unknown): Result<string> {
  if (typeof raw !== 'string' || raw.trim() === '') return err('username is required')
  if (raw.length > RAW_CHARS_MAX) return err(`username is longer than ${USERNAME_MAX} characters`)
  const name = raw.normalize('NFKC').trim()
  if (name === '') return err('username is required')
  if ([...name].length > USERNAME_MAX) return err(`username is longer than ${USERNAME_MAX} characters`)
  if (!ALLOWED.test(name) || !HAS_LETTER_OR_DIGIT.test(name)) {
    return err('username may contain only letters, digits, spaces, "_", "-" and "." (and at least one letter or digit)')
  }
  if (INVISIBLE.test(name)) return err('username contains an invisible character')
  if (!marksWithinLimit(name)) return err(`username has more than ${MARKS_PER_LETTER_MAX} marks on one letter, or one mark twice`)
  if (!highlyRestrictive(name)) return err('username mixes scripts that can be confused (e.g. Latin with Cyrillic)')
  return ok(name)
}

/** The identity of a name for uniqueness: equal keys mean names a reader could take for each other. */
export function usernameKey(name: string): string {
  const key = unhomoglyph(name.normalize('NFKC').normalize('NFD')).normalize('NFD').replace(/ +/g, ' ')
  // The name itself when it is its own key (most are): maps keyed by it then hold no second copy.
  return key === name ? name : key
}

function marksWithinLimit(name: string): boolean {
  let run: string[] = []
  for (const ch of name.normalize('NFD')) {
    if (!NONSPACING_MARK.test(ch)) {
      run = []
      continue
    }
    if (run.includes(ch) || run.length >= MARKS_PER_LETTER_MAX) return false
    run.push(ch)
  }
  return true
}

// ------------------------------------------------------------------ restriction level (UTS #39 §5)

// ISO 15924 codes of Unicode's scripts (Unicode 17); a code the runtime's regex engine does not
// know is skipped, so an older engine only loses scripts it could not match anyway.
const SCRIPT_CODES = (
  'Adlm Aghb Ahom Arab Armi Armn Avst Bali Bamu Bass Batk Beng Berf Bhks Bopo Brah Brai Bugi Buhd Cakm Cans Cari ' +
  'Cham Cher Chrs Copt Cpmn Cprt Cyrl Deva Diak Dogr Dsrt Dupl Egyp Elba Elym Ethi Gara Geor Glag Gong Gonm Goth ' +
  'Gran Grek Gujr Gukh Guru Hang Hani Hano Hatr Hebr Hira Hluw Hmng Hmnp Hung Ital Java Kali Kana Kawi Khar Khmr ' +
  'Khoj Kits Knda Krai Kthi Lana Laoo Latn Lepc Limb Lina Linb Lisu Lyci Lydi Mahj Maka Mand Mani Marc Medf Mend ' +
  'Merc Mero Mlym Modi Mong Mroo Mtei Mult Mymr Nagm Nand Narb Nbat Newa Nkoo Nshu Ogam Olck Onao Orkh Orya Osge ' +
  'Osma Ougr Palm Pauc Perm Phag Phli Phlp Phnx Plrd Prti Rjng Rohg Runr Samr Sarb Saur Sgnw Shaw Shrd Sidd Sidt ' +
  'Sind Sinh Sogd Sogo Sora Soyo Sund Sunu Sylo Syrc Tagb Takr Tale Talu Taml Tang Tavt Tayo Telu Tfng Tglg Thaa ' +
  'Thai Tibt Tirh Tnsa Todr Tols Toto Tutg Ugar Vaii Vith Wara Wcho Xpeo Xsux Yezi Yiii Zanb'
).split(' ')

const SCRIPTS: Array<{ code: string; test: RegExp }> = SCRIPT_CODES.flatMap((code) => {
  try {
    return [{ code, test: new RegExp(`^\\p{Script_Extensions=${code}}$`, 'u') }]
  } catch {
    return []
  }
})

// UTS #39 §5.1 augmented script sets: Han, Kana and Hangul also count as the writing systems
// that combine them (Japanese, Han with Bopomofo, Korean).
const AUGMENT: Record<string, string[]> = { Hani: ['Hanb', 'Jpan', 'Kore'], Hira: ['Jpan'], Kana: ['Jpan'], Hang: ['Kore'], Bopo: ['Hanb'] }

/** The sets allowed beside single scripts at the "highly restrictive" level. */
const ALLOWED_MIXES = [new Set(['Latn', 'Jpan']), new Set(['Latn', 'Hanb']), new Set(['Latn', 'Kore'])]

/** The augmented script set of one character; null for Common/Inherited (compatible with all). */
function scriptsOf(ch: string): Set<string> | null {
  if (/^[A-Za-z]$/.test(ch)) return new Set(['Latn'])
  if (ANY_SCRIPT.test(ch)) return null
  const scripts = new Set<string>()
  for (const { code, test } of SCRIPTS) if (test.test(ch)) for (const c of [code, ...(AUGMENT[code] ?? [])]) scripts.add(c)
  return scripts
}

function highlyRestrictive(name: string): boolean {
  const sets = [...new Set(name)].map(scriptsOf).filter((s): s is Set<string> => s !== null)
  if (sets.length === 0) return true
  // Single script: some script is shared by every character.
  if ([...sets[0]!].some((script) => sets.every((s) => s.has(script)))) return true
  // A mix: every character belongs to one of the mix's scripts (Jpan etc. stand for Han + kana).
  return ALLOWED_MIXES.some((mix) => sets.every((s) => [...s].some((script) => mix.has(script))))
}
