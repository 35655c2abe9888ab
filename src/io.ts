// Everything a node needs from the outside world, in one record. Production passes `realIo()`;
// the whole-node simulator passes a virtual clock, a seeded random source, counted incarnations
// and the in-memory transport, so the same node code runs under seeded fault schedules.
import type { TransportFactory } from './cluster/transport'

export interface Clock {
  /** Milliseconds since the epoch: timestamps users see, and time the shell measures. */
  now(): number
  /** Calls `fn` every `ms` until the returned function is called. */
  every(ms: number, fn: () => void): () => void
  /** Calls `fn` once after `ms` unless the returned function is called first. */
  after(ms: number, fn: () => void): () => void
  /**
   * Calls `fn` once everything already waiting to run now has run (the end of this event-loop
   * turn): work that many events in one turn cause is then done once, for all of them.
   */
  defer(fn: () => void): void
  /**
   * Calls `fn` once the callback now running has returned (a socket read: every frame in it
   * handled), before the rest of the turn: what a peer is owed goes out without waiting behind
   * the turn's other sockets.
   */
  soon(fn: () => void): void
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
/** What a machine reading the log wants beside the sentence: level, an event name, its fields. */
export type LogFields = { level?: LogLevel; event?: string } & Record<string, unknown>
/** One log line: a sentence for people, fields for machines (see src/log.ts). */
export type Log = (line: string, fields?: LogFields) => void

export interface NodeIo {
  transport: TransportFactory
  clock: Clock
  /** Uniform in [0, 1). */
  random: () => number
  /** A fresh incarnation id for each start and each rejoin of this node. */
  newIncarnation: () => string
  log: Log
  /** CPU time this process has used, ms (load.ts tells its own lag from a machine that did not run it); the simulator has none. */
  cpuMs?: () => number
}

export const realClock: Clock = {
  now: Date.now,
  every(ms, fn) {
    const timer = setInterval(fn, ms)
    return () => clearInterval(timer)
  },
  after(ms, fn) {
    const timer = setTimeout(fn, ms)
    return () => clearTimeout(timer)
  },
  // After the I/O callbacks of this turn: every frame read in it is handled before the batch goes out.
  defer: (fn) => void setImmediate(fn),
  // Bun runs the microtasks after each callback it makes into JavaScript (each socket's read).
  soon: (fn) => queueMicrotask(fn),
}
