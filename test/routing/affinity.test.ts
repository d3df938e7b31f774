/**
 * RoutingAffinity (M8.1, M8.2): the pure transition function, every state x event
 * (success or failure, of the state's own channel or another one), the cool-down's end,
 * the success count, and the stored form.
 */
import {
  applyAll,
  parseAffinityState,
  preferredChannel,
  transition,
  UNBOUND,
  type AffinityEvent,
  type AffinitySettings,
  type AffinityState,
} from '../../src/routing/affinity';

const settings: AffinitySettings = { bindAfterSuccesses: 2, coolingMs: 1_000 };
const T = 10_000;
const ok = (channel: string, at = T): AffinityEvent => ({ type: 'success', channel, at });
const fail = (channel: string, at = T): AffinityEvent => ({ type: 'failure', channel, at });
const step = (s: AffinityState, e: AffinityEvent): AffinityState => transition(s, e, settings);

const probingA: AffinityState = { kind: 'probing', channel: 'a', successes: 1 };
const boundA: AffinityState = { kind: 'bound', channel: 'a', successes: 5 };
const coolingA: AffinityState = { kind: 'cooling', channel: 'a', successes: 5, until: T + 500 };

describe('transition: every state x event', () => {
  // [name, state, event, expected]
  const table: Array<[string, AffinityState, AffinityEvent, AffinityState]> = [
    ['unbound + success(a) -> probing(a, 1)', UNBOUND, ok('a'), { kind: 'probing', channel: 'a', successes: 1 }],
    ['unbound + failure(a) -> unbound', UNBOUND, fail('a'), UNBOUND],
    ['probing(a) + success(a) -> bound(a, 2) at the bind threshold', probingA, ok('a'), { kind: 'bound', channel: 'a', successes: 2 }],
    ['probing(a) + success(b) -> probing(b, 1): the probe moves to what worked', probingA, ok('b'), { kind: 'probing', channel: 'b', successes: 1 }],
    ['probing(a) + failure(a) -> unbound', probingA, fail('a'), UNBOUND],
    ['probing(a) + failure(b) -> unchanged', probingA, fail('b'), probingA],
    ['bound(a) + success(a) -> bound(a, n + 1)', boundA, ok('a'), { kind: 'bound', channel: 'a', successes: 6 }],
    ['bound(a) + success(b) -> cooling(a): a was skipped, the binding stays', boundA, ok('b'), { kind: 'cooling', channel: 'a', successes: 5, until: T + 1_000 }],
    ['bound(a) + failure(a) -> cooling(a) without rebinding', boundA, fail('a'), { kind: 'cooling', channel: 'a', successes: 5, until: T + 1_000 }],
    ['bound(a) + failure(b) -> unchanged', boundA, fail('b'), boundA],
    ['cooling(a) + success(a) -> bound(a, n + 1): recovered', coolingA, ok('a'), { kind: 'bound', channel: 'a', successes: 6 }],
    ['cooling(a) + success(b) during the cool-down -> unchanged (no rebinding)', coolingA, ok('b', T + 499), coolingA],
    ['cooling(a) + success(b) after the cool-down -> probing(b, 1)', coolingA, ok('b', T + 500), { kind: 'probing', channel: 'b', successes: 1 }],
    ['cooling(a) + failure(a) -> cooling(a) from now', coolingA, fail('a', T + 200), { kind: 'cooling', channel: 'a', successes: 5, until: T + 1_200 }],
    ['cooling(a) + failure(b) -> unchanged', coolingA, fail('b'), coolingA],
  ];

  it.each(table)('%s', (_name, state, event, expected) => {
    const before = JSON.stringify(state);
    expect(step(state, event)).toEqual(expected);
    expect(JSON.stringify(state)).toBe(before); // pure: the input is not mutated
  });

  it('covers every state kind with both event types, own channel and another', () => {
    const kinds = new Set(table.map(([, s]) => s.kind));
    expect([...kinds].sort()).toEqual(['bound', 'cooling', 'probing', 'unbound']);
    for (const kind of ['probing', 'bound', 'cooling']) {
      const rows = table.filter(([, s]) => s.kind === kind);
      const combos = new Set(rows.map(([, s, e]) => `${e.type}:${e.channel === (s as { channel: string }).channel ? 'own' : 'other'}`));
      expect([...combos].sort()).toEqual(['failure:other', 'failure:own', 'success:other', 'success:own']);
    }
  });
});

describe('the success count (M8.2) and binding', () => {
  it('binds after bindAfterSuccesses successes and keeps counting', () => {
    const s = applyAll(UNBOUND, [ok('a'), ok('a'), ok('a'), ok('a')], settings);
    expect(s).toEqual({ kind: 'bound', channel: 'a', successes: 4 });
  });

  it('with bindAfterSuccesses 1 the first success binds', () => {
    expect(transition(UNBOUND, ok('a'), { bindAfterSuccesses: 1, coolingMs: 1 })).toEqual({ kind: 'bound', channel: 'a', successes: 1 });
  });

  it('a bound channel that failed before a fallback served keeps its binding during the cool-down (M8.3 events of one call)', () => {
    // One call: a failed before its first byte, b served.
    const s = applyAll(boundA, [fail('a'), ok('b')], settings);
    expect(s).toEqual({ kind: 'cooling', channel: 'a', successes: 5, until: T + 1_000 });
    expect(preferredChannel(s, T + 999)).toBeUndefined();
    expect(preferredChannel(s, T + 1_000)).toBe('a');
    // a is tried again after the cool-down and works: bound again, count continues.
    expect(step(s, ok('a', T + 1_000))).toEqual({ kind: 'bound', channel: 'a', successes: 6 });
    // or it failed again and b served after the cool-down: b is probed, then bound.
    const moved = applyAll(s, [fail('a', T + 1_000), ok('b', T + 2_001), ok('b', T + 2_002)], settings);
    expect(moved).toEqual({ kind: 'bound', channel: 'b', successes: 2 });
  });
});

describe('preferredChannel', () => {
  it('names the probed or bound channel, none when unbound, none while cooling', () => {
    expect(preferredChannel(UNBOUND, T)).toBeUndefined();
    expect(preferredChannel(probingA, T)).toBe('a');
    expect(preferredChannel(boundA, T)).toBe('a');
    expect(preferredChannel(coolingA, T + 499)).toBeUndefined();
    expect(preferredChannel(coolingA, T + 500)).toBe('a');
  });
});

describe('parseAffinityState', () => {
  it('round-trips every state', () => {
    for (const s of [UNBOUND, probingA, boundA, coolingA]) expect(parseAffinityState(JSON.stringify(s))).toEqual(s);
  });

  it('reads anything unreadable as unbound', () => {
    for (const text of [null, '', 'not json', '{}', '{"kind":"bound","channel":"a"}', '{"kind":"bound","channel":"","successes":1}', '{"kind":"cooling","channel":"a","successes":1}', '{"kind":"probing","channel":"a","successes":0}', '[]']) {
      expect(parseAffinityState(text)).toEqual(UNBOUND);
    }
  });
});
