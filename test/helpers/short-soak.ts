/**
 * The short fault-injection soak (issue 14 item 4, M12), shared by the dev-server suite
 * (test/e2e/chaos-soak.test.ts) and the cluster suite (test/cluster/chaos-soak.test.ts): the
 * same code as `npm run chaos`, a few hundred requests, each fault kind of the topology once,
 * on a system of its own (it kills its services, so never the suite's shared one). Every
 * invariant must hold, and every fault must be recovered from.
 */
import { CLUSTER_FAULT_KINDS, FAULT_KINDS, defaultChaosOptions } from '../../bench/chaos/options';
import { runChaos, type ChaosResult } from '../../bench/chaos/run';
import { outcomeOf } from '../../bench/chaos/load';

export function describeShortSoak(topology: 'embedded' | 'cluster', seed: number): void {
  const kinds = topology === 'cluster' ? CLUSTER_FAULT_KINDS : FAULT_KINDS;
  describe(`fault-injection soak (short, ${topology} topology)`, () => {
    let result: ChaosResult;
    const lines: string[] = [];

    beforeAll(async () => {
      result = await runChaos({
        ...defaultChaosOptions(), topology, faults: kinds, requests: 240, seed, concurrency: 8, faultsPerKind: 1, faultLanes: 2, downMs: 500, verbose: false,
        stackLogLevel: (process.env.TEST_LOG_LEVEL as 'info' | undefined) ?? 'silent',
      }, (l) => lines.push(l));
    }, 300_000);

    it('injects each fault once and recovers from each', () => {
      expect(result.faults.map((f) => f.kind).sort()).toEqual([...kinds].sort());
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
}
