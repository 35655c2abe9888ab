// ClusterListener-style events, derived by comparing two views of the membership: the core
// stays free of logging concerns and every event is reported exactly once per change.
import type { MembershipView, MemberView } from './membership'

export type MemberEventType =
  | 'joined' | 'up' | 'leaving' | 'down' | 'removed' | 'unreachable' | 'reachable' | 'leader_changed' | 'term_changed'

export interface MemberEvent {
  type: MemberEventType
  /** The member concerned (its id), when the event is about one member. */
  id?: string
  text: string
}

export function diffViews(prev: MembershipView | undefined, next: MembershipView): MemberEvent[] {
  const events: MemberEvent[] = []
  const before = new Map((prev?.members ?? []).map((m) => [m.id, m]))
  const after = new Map(next.members.map((m) => [m.id, m]))
  const member = (type: MemberEventType, m: MemberView, text: string) => events.push({ type, id: m.id, text: `${text} ${m.address} (${m.incarnation})` })

  for (const m of next.members) {
    const old = before.get(m.id)
    if (!old || old.status !== m.status) {
      if (!old) member('joined', m, 'member joined:')
      if (m.status === 'Up') member('up', m, 'member up:')
      if (m.status === 'Leaving') member('leaving', m, 'member leaving:')
      if (m.status === 'Down') member('down', m, 'member down:')
    }
    if (old && old.reachable !== m.reachable) member(m.reachable ? 'reachable' : 'unreachable', m, m.reachable ? 'member reachable again:' : 'member unreachable:')
  }
  for (const m of before.values()) if (!after.has(m.id)) member('removed', m, 'member removed:')
  if (prev && prev.term !== next.term) events.push({ type: 'term_changed', text: `term changed: ${prev.term} -> ${next.term}` })
  if ((prev?.leaderId ?? null) !== next.leaderId) {
    events.push({ type: 'leader_changed', id: next.leaderId ?? undefined, text: `leader changed: ${next.leaderId ?? 'none'}` })
  }
  return events
}
