// The link's own control frames, after the handshake. They keep a link honest without waiting on
// TCP's timers, and let a link survive a reconnect without losing or repeating a frame:
//
//   dialer                                  listener
//   link_resume {stream, next}       ──▶    (the frames that follow are numbered next, next+1, …)
//   link_ping                        ──▶
//                                    ◀──    link_pong {ack}   (the highest frame number delivered;
//                                                              also sent unasked after frames arrive)
//
// Frames are numbered implicitly, per link (`stream`, unique within the sender's incarnation) and
// across its connections: the dialer sends `link_resume` on each new connection, then every frame
// not yet acknowledged, and the listener skips the numbers it already delivered. Frames before the resume (what onConnected
// sends) are not numbered: they are about the new connection and are sent again on the next one.
// A link silent for the link timeout is torn down and redialled at once; its unacknowledged frames
// go again on the new connection. These frames never reach the validators or the application.
import { encodeFrame } from '../codec'

export const LINK_TYPES = new Set(['link_ping', 'link_pong', 'link_resume'])

export type LinkControl = { type: 'link_ping' } | { type: 'link_pong'; ack: number } | { type: 'link_resume'; stream: number; next: number }

export const PING_FRAME = encodeFrame({ type: 'link_ping' })
export const pongFrame = (ack: number) => encodeFrame({ type: 'link_pong', ack })
export const resumeFrame = (stream: number, next: number) => encodeFrame({ type: 'link_resume', stream, next })

const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0

/** A link control frame, checked; null for any other value (an application or cluster frame). */
export function asLinkControl(value: unknown): LinkControl | 'bad' | null {
  const type = (value as { type?: unknown } | null)?.type
  if (typeof type !== 'string' || !LINK_TYPES.has(type)) return null
  const v = value as Record<string, unknown>
  switch (type) {
    case 'link_ping':
      return { type }
    case 'link_pong':
      return isCount(v.ack) ? { type, ack: v.ack } : 'bad'
    default:
      return isCount(v.stream) && isCount(v.next) && v.next >= 1 ? { type: 'link_resume', stream: v.stream, next: v.next } : 'bad'
  }
}

/** How often a link pings: three pings per timeout, so one late pong does not tear it down. */
export const pingIntervalMs = (linkTimeoutMs: number) => Math.max(10, Math.floor(linkTimeoutMs / 3))

export const DEFAULT_LINK_TIMEOUT_MS = 300
