// Log lines: text for people (`make cluster`), JSON lines for machines (`--log-format json`).
// Call sites say what happened in a sentence and, where a machine would want it, name the event
// and its fields; the level filter drops what is below `--log-level`.
import type { Log, LogFields, LogLevel } from './io'

export const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error']

export interface LoggerOptions {
  format: 'text' | 'json'
  level: LogLevel
  /** This node's address, on every JSON line. */
  node: string
  write?: (line: string) => void
  now?: () => number
}

export function createLogger(o: LoggerOptions): Log {
  const write = o.write ?? ((line: string) => console.log(line))
  const now = o.now ?? Date.now
  const threshold = LOG_LEVELS.indexOf(o.level)
  return (message: string, fields: LogFields = {}) => {
    const { level = 'info', event = 'message', ...rest } = fields
    if (LOG_LEVELS.indexOf(level) < threshold) return
    const time = new Date(now()).toISOString()
    if (o.format === 'text') return write(`${time} ${level === 'info' ? '' : `${level.toUpperCase()} `}${message}`)
    write(JSON.stringify({ time, level, node: o.node, event, msg: message, ...rest }))
  }
}
