/**
 * `npm run chaos` flags (issue 14 item 4): the topology a run is made on, and the faults it may
 * inject there. PostgreSQL is not supervised on the cluster, so asking to kill it is an error.
 */
import { CLUSTER_FAULT_KINDS, FAULT_KINDS, parseChaosArgs } from '../../bench/chaos/options';

describe('chaos options', () => {
  it('runs on the embedded stack with every fault kind by default', () => {
    const o = parseChaosArgs(['--seed', '7']);
    expect([o.topology, o.seed, [...o.faults]]).toEqual(['embedded', 7, [...FAULT_KINDS]]);
  });

  it('--cluster kills everything but PostgreSQL unless told otherwise', () => {
    expect([...parseChaosArgs(['--cluster']).faults]).toEqual(['worker', 'api', 'redis', 'temporal', 'upstream']);
    expect(CLUSTER_FAULT_KINDS).not.toContain('postgres');
    expect([...parseChaosArgs(['--faults', 'redis,temporal', '--cluster']).faults]).toEqual(['redis', 'temporal']);
  });

  it('refuses a PostgreSQL fault on the cluster, unknown kinds and bad numbers with a clear message', () => {
    expect(() => parseChaosArgs(['--cluster', '--faults', 'postgres,redis'])).toThrow(/postgres is not available with --cluster/);
    expect(() => parseChaosArgs(['--faults', 'disk'])).toThrow(/unknown kind\(s\) disk/);
    expect(() => parseChaosArgs(['--requests', '0'])).toThrow(/--requests needs an integer >= 1/);
    expect(() => parseChaosArgs(['--topology'])).toThrow(/unknown flag --topology/);
  });
});
