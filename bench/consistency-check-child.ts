/**
 * The measured process of bench/consistency.ts: the consistency check as the worker builds
 * it (src/consistency on the real repositories and scripts, settings from the config), run
 * twice over every tenant of DATABASE_URL / REDIS_URL. Prints one JSON line of figures:
 * wall time, the summary, the candidates of each run, and the process's peak RSS so far.
 */
import { Registry } from 'prom-client';
import { loadConfig } from '../src/config';
import { consistencySettings, createConsistencyCheck } from '../src/consistency/consistency-check';
import { createConsistencyLedger } from '../src/consistency/ledger-figures';
import type { ConsistencyRunSummary } from '../src/consistency/report';
import { createConsistencyReportRepository } from '../src/consistency/report-repository';
import { createDb } from '../src/db/knex';
import { createLogger } from '../src/log';
import { createBillingMetrics } from '../src/metrics';
import { createRedis } from '../src/redis/client';
import { createQuotaScripts } from '../src/redis/scripts';

export interface ChildFigures {
  baselineRssKb: number;
  runs: Array<{ label: string; wallMs: number; candidates: number; maxRssKb: number; summary: ConsistencyRunSummary }>;
}

async function main(): Promise<void> {
  const config = loadConfig();
  const db = createDb(config.DATABASE_URL ?? '', { max: 4 });
  const redis = createRedis(config.REDIS_URL ?? '', { lazyConnect: true });
  const registry = new Registry();
  const reports = createConsistencyReportRepository(db);
  const check = createConsistencyCheck({
    ledger: createConsistencyLedger(db),
    reports,
    redis,
    scripts: createQuotaScripts(redis, { ttlSeconds: config.RESERVATION_TTL_SECONDS, registry }),
    metrics: createBillingMetrics(registry),
    log: createLogger(config.LOG_LEVEL, 'bench-consistency'),
    settings: consistencySettings(config),
  });
  try {
    await redis.connect();
    await db.raw('SELECT 1');
    const figures: ChildFigures = { baselineRssKb: process.resourceUsage().maxRSS, runs: [] };
    for (const label of ['1: finds and heals the drift', '2: clean system']) {
      const start = performance.now();
      const summary = await check.run();
      const wallMs = performance.now() - start;
      const report = await reports.latest();
      figures.runs.push({ label, wallMs, candidates: report?.candidates ?? -1, maxRssKb: process.resourceUsage().maxRSS, summary });
    }
    process.stdout.write(`${JSON.stringify(figures)}\n`);
  } finally {
    redis.disconnect();
    await db.destroy();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
