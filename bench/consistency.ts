/**
 * `npm run bench:consistency` (issue 9, item 9; M4.3, M11): one consistency check over
 * 100,000 tenants, 100,000 API keys and 1,000,000 ledger rows, on an embedded PostgreSQL
 * (fsync on) and an embedded Redis (AOF on) in a throwaway directory.
 *
 *   npx tsx bench/consistency.ts [--tenants 100000] [--rows 1000000] [--drifted 100]
 *
 * Seeding (not measured): tenants, one key each, and the ledger rows (95 % committed, 4 %
 * voided, 1 % pending, spread over the last ten days) with INSERT ... SELECT generate_series;
 * then every counter in Redis equal to its ledger figure, and `--drifted` tenant and key
 * counters moved by hand. The check itself runs in a child process
 * (bench/consistency-check-child.ts), so its wall time and peak RSS are the check's alone:
 *   1. the check that finds, confirms (CONSISTENCY_CONFIRM_GRACE_MS, default 2 s) and heals
 *      the drifted counters;
 *   2. a second check, on the now clean system: the pure cost of one pass.
 * Target (issue 9): under 20 s for a check. The exit code is 1 when a check misses it, or
 * does not find and heal exactly the drift seeded.
 */
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CacheKeys } from '../src/redis/cache-keys';
import { withDatastores } from './lib/datastores';
import { printTable } from './lib/table';
import type { ChildFigures } from './consistency-check-child';

const TARGET_MS = 20_000;

const { values: cli } = parseArgs({
  options: {
    tenants: { type: 'string', default: '100000' },
    rows: { type: 'string', default: '1000000' },
    drifted: { type: 'string', default: '100' },
  },
});
const TENANTS = Number(cli.tenants);
const ROWS = Number(cli.rows);
const DRIFTED = Number(cli.drifted);
const DRIFT_MICROS = 1_234;

const seconds = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;

function runChild(env: NodeJS.ProcessEnv): Promise<ChildFigures> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'consistency-check-child.ts')], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`check child exited with ${code}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as ChildFigures);
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  });
}

async function main(): Promise<void> {
  await withDatastores('consistency', { redis: { appendOnly: true } }, async ({ db, redis: maybeRedis, databaseUrl, redisUrl }) => {
    const redis = maybeRedis!;
    const seedStart = Date.now();
    await db.raw(`INSERT INTO tenant_quota (tenant_id, name, quota_limit_micros)
      SELECT 'bench-t' || g, 'bench tenant ' || g, 1000000000000000 FROM generate_series(1, ?::int) g`, [TENANTS]);
    await db.raw(`INSERT INTO api_key_quota (id, tenant_id, name, key_hash, key_prefix, budget_micros)
      SELECT 'bench-k' || g, 'bench-t' || g, 'bench key', 'bench-hash-' || g, 'sk-bench', CASE WHEN g % 2 = 0 THEN 100000000000000 END
        FROM generate_series(1, ?::int) g`, [TENANTS]);
    await db.raw(`INSERT INTO billing_transaction (request_id, tenant_id, api_key_id, kind, status, workflow_id, model, reserved_micros, admission_path,
                                                   amount_micros, prompt_tokens, completion_tokens, token_source, created_at, updated_at, committed_at, voided_at)
      SELECT 'bench-r' || g, 'bench-t' || t, 'bench-k' || t, 'usage', status, 'billed-request:bench-r' || g, 'mock-small', 1050, 'redis',
             CASE status WHEN 'committed' THEN g % 997 + 1 WHEN 'voided' THEN 0 END,
             CASE status WHEN 'pending' THEN NULL ELSE 20 END, CASE status WHEN 'pending' THEN NULL ELSE 16 END,
             CASE status WHEN 'pending' THEN NULL ELSE 'upstream' END,
             at, at, CASE status WHEN 'committed' THEN at END, CASE status WHEN 'voided' THEN at END
        FROM (SELECT g, (g - 1) % ?::int + 1 AS t, now() - (g % 14400) * interval '1 minute' AS at,
                     CASE WHEN g % 100 = 0 THEN 'pending' WHEN g % 25 = 0 THEN 'voided' ELSE 'committed' END AS status
                FROM generate_series(1, ?::int) g) s`, [TENANTS, ROWS]);
    await db.raw('ANALYZE');
    const ledgerSeededMs = Date.now() - seedStart;

    // Redis: every counter equal to its ledger figure (one key per tenant: the same figure).
    const usage = await db.raw<{ rows: Array<{ t: string; micros: string }> }>(
      `SELECT substring(tenant_id from 8) AS t, SUM(CASE status WHEN 'committed' THEN amount_micros WHEN 'pending' THEN reserved_micros ELSE 0 END)::text AS micros
         FROM billing_transaction GROUP BY tenant_id`);
    const micros = new Map(usage.rows.map((r) => [r.t, r.micros]));
    for (let start = 1; start <= TENANTS; start += 1000) {
      const pipeline = redis.pipeline();
      for (let g = start; g < Math.min(start + 1000, TENANTS + 1); g++) {
        const used = micros.get(String(g)) ?? '0';
        pipeline.hset(CacheKeys.tenantQuota(`bench-t${g}`), { limit_micros: '1000000000000000', used_micros: used, warmup_id: 'bench', version: '1' });
        pipeline.hset(CacheKeys.apiKeyBudget(`bench-t${g}`, `bench-k${g}`), { budget_micros: g % 2 === 0 ? '100000000000000' : '-1', spent_micros: used, warmup_id: 'bench', version: '1' });
      }
      await pipeline.exec();
    }
    // The drift to find: the first DRIFTED tenants' quota counters and the last DRIFTED keys' budget counters.
    for (let i = 1; i <= DRIFTED; i++) {
      await redis.hincrby(CacheKeys.tenantQuota(`bench-t${i}`), 'used_micros', DRIFT_MICROS);
      await redis.hincrby(CacheKeys.apiKeyBudget(`bench-t${TENANTS + 1 - i}`, `bench-k${TENANTS + 1 - i}`), 'spent_micros', -DRIFT_MICROS);
    }
    const seededMs = Date.now() - seedStart;
    const rows = (await db('billing_transaction').count<{ count: string }[]>('* as count'))[0]?.count;
    console.log(`seeded ${TENANTS} tenants, ${TENANTS} keys, ${rows} ledger rows in ${seconds(ledgerSeededMs)} (PostgreSQL) + ${seconds(seededMs - ledgerSeededMs)} (Redis counters)`);

    const figures = await runChild({ ...process.env, DATABASE_URL: databaseUrl, REDIS_URL: redisUrl, LOG_LEVEL: 'warn' });
    const header = ['check', 'wall time', 'tenants', 'keys', 'candidates', 'healed', 'drift (tenant / key micros)', 'peak RSS so far'];
    const table = figures.runs.map((r) => [
      r.label, seconds(r.wallMs), String(r.summary.tenantsChecked), String(r.summary.keysChecked), String(r.candidates), String(r.summary.heals),
      `${r.summary.tenantDriftMicros} / ${r.summary.apikeyDriftMicros}`, `${(r.maxRssKb / 1024).toFixed(0)} MiB`,
    ]);
    printTable(header, table);
    console.log(`\nchild RSS before the first check: ${(figures.baselineRssKb / 1024).toFixed(0)} MiB; node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? 'unknown'}); PostgreSQL embedded (fsync on), Redis embedded (AOF on).`);

    const [drifted, clean] = figures.runs;
    const problems: string[] = [];
    for (const r of figures.runs) if (r.wallMs >= TARGET_MS) problems.push(`${r.label}: ${seconds(r.wallMs)} >= ${seconds(TARGET_MS)}`);
    if (drifted?.summary.heals !== 2 * DRIFTED || drifted.summary.tenantDriftMicros !== DRIFTED * DRIFT_MICROS || drifted.summary.apikeyDriftMicros !== DRIFTED * DRIFT_MICROS) {
      problems.push(`the first check did not heal exactly the seeded drift: ${JSON.stringify(drifted?.summary)}`);
    }
    if (clean?.summary.status !== 'ok' || clean.candidates !== 0) problems.push(`the second check is not clean: ${JSON.stringify(clean?.summary)}`);
    for (const p of problems) console.error(`FAIL ${p}`);
    if (problems.length > 0) process.exitCode = 1;
  });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
