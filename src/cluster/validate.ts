// Turns a set of TypeBox message schemas (a discriminated union on `type`) into one check for
// untrusted decoded values. The transport is handed such a check; it does not know the messages.
import type { TObject, TSchema } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { err, ok, type Result } from '../result'

export type Typed = { type: string }
export type Validator<M> = (value: unknown) => Result<M>

export function validatorFor<M extends Typed>(schemas: readonly TSchema[]): Validator<M> {
  const checkers = new Map<string, ReturnType<typeof TypeCompiler.Compile>>()
  for (const schema of schemas) checkers.set((schema as TObject).properties.type!.const as string, TypeCompiler.Compile(schema))
  return (value) => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return err('not an object')
    const type = (value as { type?: unknown }).type
    const checker = typeof type === 'string' ? checkers.get(type) : undefined
    // String() only on primitives: a peer's object with a non-function `toString` makes it throw.
    if (!checker) return err(`unknown message type ${typeof type === 'object' && type !== null ? 'of kind object' : String(type).slice(0, 40)}`)
    if (!checker.Check(value)) {
      const first = checker.Errors(value).First()
      return err(`invalid ${type}: ${first ? `${first.path} ${first.message}` : 'schema mismatch'}`)
    }
    return ok(value as M)
  }
}

/** The `type` literals of a union of object schemas: derived, never restated. */
export const typesOf = (schemas: readonly TSchema[]) => new Set(schemas.map((s) => (s as TObject).properties.type!.const as string))
