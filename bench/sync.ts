/**
 * `npm run bench:sync` (issue 9, item 9): the quota sync over 100,000 tenants and the
 * API-key sync over 100,000 keys, on an embedded PostgreSQL (fsync on) and Redis.
 *
 * Seeds the tables with generate_series and the Redis counter hashes with pipelined HSETs,
 * then runs each sync twice: the first run writes every row, the second runs against a table
 * that already holds those versions (writes them again: same version, fresher synced_at).
 * Prints wall time, rows written and this process's peak RSS during each run (sampled every
 * 20 ms; the baseline before the run is printed beside it). Options: --tenants N (default
 * 100000), one key per tenant.
 */
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { CacheKeys } from '../src/redis/cache-keys';
import { createCounterSync, type SyncRunSummary } from '../src/sync/counter-sync';
import { withDatastores } from './lib/datastores';
import { printTable } from './lib/table';

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const mb = (bytes: number): string => (bytes / 1024 / 1024).toFixed(0);

/** Runs `fn`, sampling this process's RSS; returns its result, wall ms and peak RSS. */
async function measured<T>(fn: () => Promise<T>): Promise<{ result: T; ms: number; baseRss: number; peakRss: number }> {
  const baseRss = process.memoryUsage().rss;
  let peakRss = baseRss;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);
  const start = performance.now();
  try {
    const result = await fn();
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
    return { result, ms: performance.now() - start, baseRss, peakRss };
  } finally {
    clearInterval(sampler);
  }
}

async function main(): Promise<void> {
  const tenants = option('tenants', 100_000);
  await withDatastores('sync', { redis: { appendOnly: false } }, async ({ db, redis: maybeRedis }) => {
    const redis = maybeRedis!;
    const seedStart = performance.now();
    await db.raw(`INSERT INTO tenant_quota (tenant_id, name, quota_limit_micros)
                  SELECT 't' || lpad(i::text, 7, '0'), 'bench', 1000000000 FROM generate_series(1, ?) AS i`, [tenants]);
    await db.raw(`INSERT INTO api_key_quota (id, tenant_id, name, key_hash, key_prefix, budget_micros)
                  SELECT 'k' || lpad(i::text, 7, '0'), 't' || lpad(i::text, 7, '0'), 'bench', 'hash' || i, 'sk-bench', 1000000000
                    FROM generate_series(1, ?) AS i`, [tenants]);
    for (let from = 1; from <= tenants; from += 5000) {
      const pipeline = redis.pipeline();
      for (let i = from; i < Math.min(from + 5000, tenants + 1); i++) {
        const tenantId = `t${String(i).padStart(7, '0')}`;
        pipeline.hset(CacheKeys.tenantQuota(tenantId), 'limit_micros', '1000000000', 'used_micros', String(i * 7), 'version', '3');
        pipeline.hset(CacheKeys.apiKeyBudget(tenantId, `k${String(i).padStart(7, '0')}`), 'budget_micros', '1000000000', 'spent_micros', String(i * 3), 'version', '2');
      }
      await pipeline.exec();
    }
    console.log(`seeded ${tenants} tenants and ${tenants} keys (tables and Redis counters) in ${((performance.now() - seedStart) / 1000).toFixed(1)} s\n`);

    const sync = createCounterSync(db, redis);
    const rows: string[][] = [];
    for (const [label, run] of [
      ['quota sync (first)', () => sync.syncTenantQuotas()],
      ['quota sync (again)', () => sync.syncTenantQuotas()],
      ['apikey sync (first)', () => sync.syncApiKeyBudgets()],
      ['apikey sync (again)', () => sync.syncApiKeyBudgets()],
    ] as const) {
      const m = await measured<SyncRunSummary>(run);
      rows.push([label, String(m.result.subjects), String(m.result.written), (m.ms / 1000).toFixed(2), mb(m.baseRss), mb(m.peakRss)]);
    }
    // The figures must be the ones Redis holds: a benchmark of a sync that copies wrong numbers measures nothing.
    const check = await db('tenant_quota').sum({ used: 'used_micros' }).first<{ used: string }>();
    const expected = (7 * tenants * (tenants + 1)) / 2;
    if (Number(check.used) !== expected) throw new Error(`tenant_quota sums to ${check.used}, Redis holds ${expected}`);

    printTable(['run', 'subjects', 'written', 'wall s', 'RSS before MB', 'peak RSS MB'], rows);
    console.log(`\nnode ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? 'unknown'}); PostgreSQL embedded (fsync on), Redis embedded; pages of 1,000.`);
  });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
