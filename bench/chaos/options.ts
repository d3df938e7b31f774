/**
 * `npm run chaos` flags. A run is reproduced by its seed: the seed picks the load mix, the
 * subjects, the fault order and the moments the faults strike (wall-clock timing still
 * varies, so two runs with one seed meet the same faults at about the same points).
 */
export const FAULT_KINDS = ['worker', 'api', 'redis', 'postgres', 'temporal', 'upstream'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];
/** On the cluster topology PostgreSQL is one unsupervised process under Temporal and the ledger: it is not killed there. */
export const CLUSTER_FAULT_KINDS: readonly FaultKind[] = FAULT_KINDS.filter((k) => k !== 'postgres');

export interface ChaosOptions {
  /** `embedded` (npm start's stack) or `cluster` (npm run cluster's: a Temporal cluster and a Redis Cluster). @default 'embedded' */
  topology: 'embedded' | 'cluster';
  /** Logical client requests to send (a duplicate pair counts as two). @default 5000 */
  requests: number;
  /** @default a random 32-bit seed, printed */
  seed: number;
  /** Stop sending after this many seconds even if `requests` are not all sent (0: no limit). @default 0 */
  durationS: number;
  /** Clients sending at once. @default 12 */
  concurrency: number;
  /** How many times each fault kind strikes. @default 2 */
  faultsPerKind: number;
  /** Fault kinds to inject. @default all (on the cluster, all but postgres) */
  faults: readonly FaultKind[];
  /** How long a killed API, worker or upstream stays down before it is started again. @default 1500 */
  downMs: number;
  /** Faults that may strike at once (lanes of the fault plan); 1 = one at a time, as the full run does. @default 1 */
  faultLanes: number;
  /** Log level of the embedded stack's supervisor (its restarts). @default 'warn' */
  stackLogLevel: 'silent' | 'error' | 'warn' | 'info';
  /** Print progress lines. @default true */
  verbose: boolean;
}

export function defaultChaosOptions(): ChaosOptions {
  return {
    topology: 'embedded',
    requests: 5000,
    seed: Math.floor(Math.random() * 2 ** 32),
    durationS: 0,
    concurrency: 12,
    faultsPerKind: 2,
    faults: FAULT_KINDS,
    downMs: 1500,
    faultLanes: 1,
    stackLogLevel: 'warn',
    verbose: true,
  };
}

/** Parses `--requests 300 --seed 42 --duration 60 --concurrency 8 --faults-per-kind 1 --faults redis,api --cluster --quiet`. */
export function parseChaosArgs(argv: readonly string[]): ChaosOptions {
  const opts = defaultChaosOptions();
  let faultsGiven = false;
  const int = (flag: string, value: string | undefined, min: number): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new Error(`${flag} needs an integer >= ${min}, got ${value ?? 'nothing'}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = argv[i + 1];
    switch (flag) {
      case '--requests': opts.requests = int(flag, value, 1); i++; break;
      case '--seed': opts.seed = int(flag, value, 0); i++; break;
      case '--duration': opts.durationS = int(flag, value, 0); i++; break;
      case '--concurrency': opts.concurrency = int(flag, value, 1); i++; break;
      case '--faults-per-kind': opts.faultsPerKind = int(flag, value, 0); i++; break;
      case '--down-ms': opts.downMs = int(flag, value, 0); i++; break;
      case '--fault-lanes': opts.faultLanes = int(flag, value, 1); i++; break;
      case '--faults': {
        const kinds = (value ?? '').split(',').filter(Boolean);
        const unknown = kinds.filter((k) => !(FAULT_KINDS as readonly string[]).includes(k));
        if (unknown.length > 0) throw new Error(`--faults: unknown kind(s) ${unknown.join(', ')}; known: ${FAULT_KINDS.join(', ')}`);
        opts.faults = kinds as FaultKind[];
        faultsGiven = true;
        i++;
        break;
      }
      case '--cluster': opts.topology = 'cluster'; break;
      case '--quiet': opts.verbose = false; break;
      default: throw new Error(`unknown flag ${flag}: use --requests, --seed, --duration, --concurrency, --faults-per-kind, --faults, --down-ms, --fault-lanes, --cluster, --quiet`);
    }
  }
  if (opts.topology === 'cluster') {
    if (!faultsGiven) opts.faults = CLUSTER_FAULT_KINDS;
    if (opts.faults.includes('postgres')) throw new Error('--faults postgres is not available with --cluster: its PostgreSQL is not supervised (docs/chaos.md)');
  }
  return opts;
}

/** mulberry32: a small seeded PRNG, enough to make a run reproducible. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
