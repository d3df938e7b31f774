/**
 * Gateway benchmark (M11, issue 3 item 7): billed requests/s, end-to-end latency and its
 * overhead over a direct upstream call, streaming time to first byte, server-side admission
 * latency, a breakdown of sampled Temporal workflow histories, CPU per process, and a
 * billing-exactness check of the ledger afterwards. bench/README.md explains every figure.
 *
 *   npx tsx bench/gateway.ts [--duration 20] [--connections 50,200] [--warmup 400]
 *                            [--stream-requests 1000] [--stream-concurrency 50] [--keep-data] [--cpu-prof] [--skip-floor] [--cluster]
 *
 * The stack starts as `npm start` starts it (startStack: Temporal dev server with its SQLite
 * file, Redis with AOF, PostgreSQL with fsync) on free ports in a throwaway data dir, or uses
 * TEMPORAL_ADDRESS / REDIS_URL / DATABASE_URL when set; with --cluster, the topology of `npm run cluster`
 * (docs/cluster.md), each Temporal server process's CPU reported on its own. The gateway itself (API + worker +
 * mock upstream at zero latency) runs as `src/main.ts` in a child process, so the load
 * generator never shares its event loop and each process's CPU can be told apart.
 *
 * Gateway runs are request-count bounded (sized from the previous run's rate to last about
 * --duration seconds, hard-capped at 3x): a time-bounded autocannon run destroys its in-flight
 * requests at the deadline, and those would be billed without a 2xx, which would make the
 * "committed ledger rows == 2xx responses" check meaningless.
 *
 * Beside each gateway step runs its Temporal floor (bench/gateway/floor.ts): the same workflow shape
 * with no-op steps, on the same server, in a child process of its own, at the same concurrency for
 * --duration seconds; the report compares the gateway with it ("what the project adds").
 *
 * Targets: admission P99 < 10 ms, overhead P99 < 50 ms over the direct call, 300+ billed
 * requests/s. Exit code 1 when a target is missed, a request failed, or billing is not exact.
 *
 * This file only owns the lifecycle (stack and gateway child via bench/gateway/bench-stack.ts, the
 * floor child, cleanup, exit code); the phases, figures and report live in bench/gateway/, one
 * concept per file.
 */
import { performance } from 'node:perf_hooks';
import { benchStack } from './gateway/bench-stack';
import { startFloor, type FloorProcess } from './gateway/floor';
import { measure } from './gateway/measure';
import { parseBenchOptions } from './gateway/options';

// Parsed before anything starts: an unknown flag fails at once, with nothing to clean up.
const options = parseBenchOptions();

async function main(): Promise<void> {
  const bench = benchStack({ cpuProfile: options.cpuProfile, keepData: options.keepData, cluster: options.cluster });
  let floor: FloorProcess | undefined;
  const cleanup = async (): Promise<void> => {
    await floor?.stop().catch((err: unknown) => console.error('stopping the floor process failed:', err));
    await bench.stop();
  };
  process.once('SIGINT', () => void cleanup().finally(() => process.exit(130)));
  try {
    const started = performance.now();
    const { config, stack, gateway, adminToken, servicesNote } = await bench.start();
    if (options.floor) floor = await startFloor(stack.temporalAddress, config.TEMPORAL_NAMESPACE, { cpuProfile: options.cpuProfile });
    // With --cpu-prof V8 names each profile by pid: these tell the gateway's from the floor's.
    if (options.cpuProfile) console.error(`cpu profiles: gateway pid ${gateway.child.pid ?? '?'}${floor ? `, floor pid ${floor.child.pid ?? '?'}` : ''}`);
    console.error(`stack and gateway ready in ${((performance.now() - started) / 1000).toFixed(1)} s (${servicesNote})`);
    const ok = await measure(gateway, adminToken, { databaseUrl: stack.databaseUrl, redisUrl: stack.redisUrl, temporalAddress: stack.temporalAddress, namespace: config.TEMPORAL_NAMESPACE }, servicesNote, options, floor);
    if (!ok) process.exitCode = 1;
  } finally {
    await cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
