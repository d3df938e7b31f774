/**
 * `npm run chaos`: the fault-injection soak (issue 14, M12). Starts its own embedded stack,
 * two APIs, two workers and two upstream channels (one failing), drives a mixed load while
 * SIGKILLing a worker, an API, Redis, PostgreSQL, the Temporal dev server and an upstream at
 * seeded moments, then checks the invariants. Exit 1 on any violation.
 *
 *   npm run chaos -- --requests 5000 --seed 42 [--duration 600] [--concurrency 12] [--faults-per-kind 2] [--faults redis,api]
 *
 * On the production topology instead (`npm run chaos:cluster -- ...`, or `--cluster` once the
 * Temporal server is built): a fault kills one Temporal server process or one Redis master.
 */
import { parseChaosArgs } from './chaos/options';
import { printChaosReport } from './chaos/report';
import { runChaos } from './chaos/run';

async function main(): Promise<void> {
  const options = parseChaosArgs(process.argv.slice(2));
  const log = (line: string): void => { if (options.verbose) console.log(`[chaos ${new Date().toISOString().slice(11, 19)}] ${line}`); };
  log(`seed ${options.seed} (reproduce with --seed ${options.seed}), ${options.requests} requests`);
  const result = await runChaos(options, log);
  printChaosReport(result);
  process.exit(result.violations.length > 0 ? 1 : 0);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack : err);
  process.exit(2);
});
