// What bench/scale.ts and its load-generator workers (bench/scale/worker.ts) say to each other
// over Bun's IPC channel: one request, one reply with the same id.

/** Which server a client speaks to: ours (Elysia WebSocket), the bare Bun ceiling (same frames), Socket.IO. */
export type ServerKind = 'ours' | 'ceiling' | 'sio'
/** A client's role: storm clients come and go at once; observers stay; fan-out clients chat; probes join one at a time. */
export type Group = 'storm' | 'observer' | 'fanout' | 'probe'

export interface Target {
  url: string
  username: string
  /** Keep this client's user list exactly (a Map per client; sampled in big storms). */
  track: boolean
}

export type Request =
  | { id: number; type: 'open'; kind: ServerKind; group: Group; targets: Target[]; width: number }
  /** How many tracked clients of `group` hold exactly `expected` users. */
  | { id: number; type: 'lists'; group: Group; expected: number }
  | { id: number; type: 'close'; group: Group }
  /** This worker's fan-out senders send `perSecond` messages a second between them for `durationMs`. */
  | { id: number; type: 'send'; phase: number; perSecond: number; durationMs: number; senders: number }
  | { id: number; type: 'receipts'; phase: number }
  | { id: number; type: 'traffic' }

export interface Receipts {
  received: number
  /** Latency histogram: [bin, count] pairs, bins of HISTOGRAM_BIN_MS. */
  histogram: Array<[number, number]>
}

export interface Traffic {
  frames: number
  bytes: number
  /** By frame type (`presence`, `system`, `users`, `chat`, ...). */
  byType: Record<string, { frames: number; bytes: number }>
}

export type Reply =
  /** `retries`: handshakes refused and tried again so far, in this worker. */
  | { id: number; ok: true; type: 'opened'; ms: number; retries: number }
  | { id: number; ok: true; type: 'lists'; tracked: number; atExpected: number; sizes: { min: number; max: number } }
  | { id: number; ok: true; type: 'closed' }
  | { id: number; ok: true; type: 'sent'; sent: number; lagMaxMs: number }
  | { id: number; ok: true; type: 'receipts'; receipts: Receipts }
  | { id: number; ok: true; type: 'traffic'; traffic: Traffic }
  | { id: number; ok: false; error: string }

export const HISTOGRAM_BIN_MS = 0.1
export const HISTOGRAM_BINS = 100_000 // up to 10 s

/** Epoch milliseconds with sub-millisecond precision, comparable between processes on one machine. */
export const wallNow = () => performance.timeOrigin + performance.now()
