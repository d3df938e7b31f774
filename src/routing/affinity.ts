/**
 * RoutingAffinity (M8): the state machine that binds a conversation to an upstream
 * channel. Pure: no I/O, no clock (the time comes in with each event), so every
 * state x event pair is tested directly (test/routing/affinity.test.ts) and the Redis
 * store (./affinity-store.ts) only loads, applies and saves.
 *
 *   unbound --success(c)--> probing(c, 1) --success(c) x (BIND_AFTER-1)--> bound(c, n)
 *   bound(b) --failure(b) | success(other)--> cooling(b, until)   (the binding stays b)
 *   cooling(b) --success(b)--> bound(b)      cooling(b) --success(o) after until--> probing(o, 1)
 *
 * M8.3: the store applies events only after a successful upstream call (the channels that
 * failed before it, then the one that served), so a failing bound channel makes requests
 * fall back (cooling: routing avoids it) without moving the binding; only a success moves it.
 * `successes` counts the successes of the bound (or probed) channel (M8.2).
 */

/** Successes on one channel before a probing conversation is bound to it. */
export const BIND_AFTER_SUCCESSES = 2;
/** How long a bound channel that failed is avoided before routing tries it again. */
export const AFFINITY_COOLING_MS = 30_000;

export type AffinityState =
  | { kind: 'unbound' }
  | { kind: 'probing'; channel: string; successes: number }
  | { kind: 'bound'; channel: string; successes: number }
  | { kind: 'cooling'; channel: string; successes: number; until: number };

export type AffinityEvent =
  | { type: 'success'; channel: string; at: number }
  | { type: 'failure'; channel: string; at: number };

export interface AffinitySettings {
  bindAfterSuccesses: number;
  coolingMs: number;
}

export const DEFAULT_AFFINITY_SETTINGS: AffinitySettings = { bindAfterSuccesses: BIND_AFTER_SUCCESSES, coolingMs: AFFINITY_COOLING_MS };

export const UNBOUND: AffinityState = Object.freeze({ kind: 'unbound' });

/** The next state. Never mutates `state`. */
export function transition(state: AffinityState, event: AffinityEvent, settings: AffinitySettings = DEFAULT_AFFINITY_SETTINGS): AffinityState {
  const same = state.kind !== 'unbound' && state.channel === event.channel;
  switch (state.kind) {
    case 'unbound':
      return event.type === 'success' ? probingOrBound(event.channel, 1, settings) : state;
    case 'probing':
      if (event.type === 'success') return same ? probingOrBound(state.channel, state.successes + 1, settings) : probingOrBound(event.channel, 1, settings);
      // The probed channel failed: nothing was bound yet, start over.
      return same ? UNBOUND : state;
    case 'bound':
      if (event.type === 'success') {
        if (same) return { kind: 'bound', channel: state.channel, successes: state.successes + 1 };
        // Another channel served (the bound one was skipped): keep the binding, let it cool.
        return cooling(state.channel, state.successes, event.at, settings);
      }
      return same ? cooling(state.channel, state.successes, event.at, settings) : state;
    case 'cooling':
      if (event.type === 'success') {
        if (same) return { kind: 'bound', channel: state.channel, successes: state.successes + 1 };
        // A fallback served while the bound channel cools: no rebinding until its cool-down passed.
        return event.at < state.until ? state : probingOrBound(event.channel, 1, settings);
      }
      // The bound channel failed again: it cools from now.
      return same ? cooling(state.channel, state.successes, event.at, settings) : state;
  }
}

/** Applies events in order (the failures of one call, then its success). */
export function applyAll(state: AffinityState, events: readonly AffinityEvent[], settings: AffinitySettings = DEFAULT_AFFINITY_SETTINGS): AffinityState {
  return events.reduce((s, e) => transition(s, e, settings), state);
}

/** The channel routing should try first at `now`, if any (a cooling binding is avoided until its cool-down passed). */
export function preferredChannel(state: AffinityState, now: number): string | undefined {
  switch (state.kind) {
    case 'unbound':
      return undefined;
    case 'probing':
    case 'bound':
      return state.channel;
    case 'cooling':
      return now >= state.until ? state.channel : undefined;
  }
}

function probingOrBound(channel: string, successes: number, settings: AffinitySettings): AffinityState {
  return successes >= settings.bindAfterSuccesses ? { kind: 'bound', channel, successes } : { kind: 'probing', channel, successes };
}

function cooling(channel: string, successes: number, at: number, settings: AffinitySettings): AffinityState {
  return { kind: 'cooling', channel, successes, until: at + settings.coolingMs };
}

/** Parses a stored state; anything unreadable is `unbound` (affinity is a preference, never a reason to fail). */
export function parseAffinityState(text: string | null): AffinityState {
  if (!text) return UNBOUND;
  try {
    const v = JSON.parse(text) as Partial<{ kind: string; channel: unknown; successes: unknown; until: unknown }>;
    const channelOk = typeof v.channel === 'string' && v.channel.length > 0;
    const successesOk = Number.isSafeInteger(v.successes) && (v.successes as number) >= 1;
    if ((v.kind === 'probing' || v.kind === 'bound') && channelOk && successesOk) {
      return { kind: v.kind, channel: v.channel as string, successes: v.successes as number };
    }
    if (v.kind === 'cooling' && channelOk && successesOk && Number.isSafeInteger(v.until)) {
      return { kind: 'cooling', channel: v.channel as string, successes: v.successes as number, until: v.until as number };
    }
  } catch {
    // fall through
  }
  return UNBOUND;
}
