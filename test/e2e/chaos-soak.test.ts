/**
 * The short fault-injection soak (issue 14 item 4, M12): the same code as `npm run chaos`,
 * a few hundred requests, each fault once (a worker, an API, Redis, PostgreSQL, the Temporal
 * dev server and the good upstream channel SIGKILLed under load), on a stack of its own
 * (it kills its services, so not the suite's shared one). Every invariant must hold, and
 * every fault must be recovered from.
 */
import { FAULT_KINDS, defaultChaosOptions } from '../../bench/chaos/options';
import { runChaos, type ChaosResult } from '../../bench/chaos/run';
import { outcomeOf } from '../../bench/chaos/load';

describe('fault-injection soak (short)', () => {
  let result: ChaosResult;
  const lines: string[] = [];

  beforeAll(async () => {
    result = await runChaos({ ...defaultChaosOptions(), requests: 240, seed: 1401, concurrency: 8, faultsPerKind: 1, faultLanes: 2, downMs: 500, verbose: false, stackLogLevel: (process.env.TEST_LOG_LEVEL as 'info' | undefined) ?? 'silent' }, (l) => lines.push(l));
  }, 240_000);

  it('injects each fault once and recovers from each', () => {
    expect(result.faults.map((f) => f.kind).sort()).toEqual([...FAULT_KINDS].sort());
    expect(result.faults.filter((f) => f.error)).toEqual([]);
  });

  it('sends the whole mix and gets answers of every kind it is made to provoke', () => {
    const outcomes = new Set(result.records.map(outcomeOf));
    expect(result.records.filter((r) => r.kind !== 'probe')).toHaveLength(240);
    expect(outcomes).toContain('200 completed');
    expect(outcomes).toContain('200 client disconnected');
    expect([...outcomes].some((o) => o.startsWith('429'))).toBe(true);
  });

  it('holds every invariant: nothing lost, nothing billed twice, counters converged', () => {
    expect(result.invariants.map((i) => i.name)).toHaveLength(8);
    for (const i of result.invariants) expect([i.name, i.checked > 0]).toEqual([i.name, true]);
    expect(result.violations).toEqual([]);
  });
});
