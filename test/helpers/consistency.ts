/**
 * The consistency check (src/consistency) wired on real Redis and PostgreSQL for tests,
 * with a fresh metrics Registry, captured log lines and fast default settings, plus the
 * invariant every test ends with: each counter equals the ledger, to the micro.
 */
import { Writable } from 'node:stream';
import type { Knex } from 'knex';
import pino from 'pino';
import { Registry } from 'prom-client';
import { createConsistencyCheck, type ConsistencyCheckDeps, type ConsistencySettings } from '../../src/consistency/consistency-check';
import { createConsistencyLedger } from '../../src/consistency/ledger-figures';
import { createConsistencyReportRepository } from '../../src/consistency/report-repository';
import { createBillingRepository } from '../../src/db/billing-repository';
import { createBillingMetrics } from '../../src/metrics';
import type { Redis } from '../../src/redis/client';
import { readKeyBudget, readTenantQuota } from '../../src/redis/quota-cache';
import { createQuotaScripts } from '../../src/redis/scripts';
import { TEST_TTL_SECONDS, type TenantSeed } from './activity-deps';

/** Short grace: the tests drive every move themselves (or through `sleep`). */
export const TEST_CONSISTENCY_SETTINGS: ConsistencySettings = Object.freeze({
  driftThresholdMicros: 0,
  confirmGraceMs: 50,
  confirmRounds: 3,
  heal: true,
  recordTtlSeconds: TEST_TTL_SECONDS,
});

export interface ConsistencyHarness {
  check: ReturnType<typeof createConsistencyCheck>;
  reports: ReturnType<typeof createConsistencyReportRepository>;
  registry: Registry;
  /** Every log line the check wrote (JSON text). */
  logLines: string[];
}

export function consistencyHarness(
  redis: Redis,
  db: Knex,
  overrides: { settings?: Partial<ConsistencySettings>; sleep?: ConsistencyCheckDeps['sleep']; budgetWindows?: ConsistencyCheckDeps['budgetWindows'] } = {},
): ConsistencyHarness {
  const registry = new Registry();
  const logLines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      logLines.push(chunk.toString('utf8'));
      callback();
    },
  });
  const reports = createConsistencyReportRepository(db);
  const check = createConsistencyCheck({
    ledger: createConsistencyLedger(db),
    reports,
    redis,
    scripts: createQuotaScripts(redis, { ttlSeconds: TEST_TTL_SECONDS, registry }),
    metrics: createBillingMetrics(registry),
    log: pino({ level: 'info' }, sink),
    settings: { ...TEST_CONSISTENCY_SETTINGS, ...overrides.settings },
    sleep: overrides.sleep,
    budgetWindows: overrides.budgetWindows,
  });
  return { check, reports, registry, logLines };
}

/** Every counter of `seed` (tenant and keys) that is missing or differs from the ledger; [] when all are exact. */
export async function counterMismatches(redis: Redis, db: Knex, seed: TenantSeed): Promise<string[]> {
  const ledger = createBillingRepository(db);
  const problems: string[] = [];
  const tenant = await readTenantQuota(redis, seed.tenantId);
  const usage = await ledger.tenantLedgerUsage(seed.tenantId);
  if (tenant?.usedMicros !== usage) problems.push(`tenant ${seed.tenantId}: redis ${tenant?.usedMicros ?? 'missing'} != ledger ${usage}`);
  for (const apiKeyId of seed.apiKeyIds) {
    const key = await readKeyBudget(redis, seed.tenantId, apiKeyId);
    const spend = await ledger.apiKeyLedgerSpend(apiKeyId);
    if (key?.spentMicros !== spend) problems.push(`key ${apiKeyId}: redis ${key?.spentMicros ?? 'missing'} != ledger ${spend}`);
  }
  return problems;
}
