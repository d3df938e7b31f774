/**
 * Real dependencies for the billed request's activities, wired as the worker's
 * buildActivities wires them (src/roles/worker.ts), on the Redis and PostgreSQL
 * that the jest global setup started. Each test gets its own metrics Registry, so
 * counters read back exactly what that test did; tenants and keys are seeded with
 * unique ids, so test files can share one Redis and one database.
 */
import type { Knex } from 'knex';
import { Registry } from 'prom-client';
import { createQuotaWarmup, type QuotaWarmup } from '../../src/redis/quota-warmup';
import type { ModelPrice } from '../../src/billing/pricing';
import { createApiKeyRepository } from '../../src/db/api-key-repository';
import { createBillingRepository, type BillingRepository } from '../../src/db/billing-repository';
import { createRequestBodyRepository, type RequestBodyRepository } from '../../src/db/request-body-repository';
import { developmentKeyring } from '../../src/codec/keyring';
import { createTenantRepository } from '../../src/db/tenant-repository';
import { createLogger, type Logger } from '../../src/log';
import { createBillingMetrics, type BillingMetrics } from '../../src/metrics';
import type { Redis } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';
import { readKeyBudget, readTenantQuota } from '../../src/redis/quota-cache';
import { createQuotaScripts, type QuotaScripts } from '../../src/redis/scripts';
import { createRequestRelay, type RequestRelay } from '../../src/redis/request-relay';
import type { BilledRequestInput } from '../../src/workflows/definitions';
import { uniqueId } from './services';

/** Expiry of request records and relay streams in these tests. */
export const TEST_TTL_SECONDS = 3600;

/**
 * A price list entry with round numbers: 2.5 units per Mtok in, 10 units per Mtok out.
 * 'mock-small' counts with cl100k_base, the encoding the mock upstream's reply words are
 * single tokens in, so tiktoken counts of relayed text are exact.
 */
export const TEST_PRICE: Readonly<ModelPrice> = Object.freeze({
  model: 'mock-small',
  inputPriceMicrosPerMtok: 2_500_000,
  outputPriceMicrosPerMtok: 10_000_000,
  maxOutputTokens: 1000,
});

export interface StepDeps {
  scripts: QuotaScripts;
  ledger: BillingRepository;
  warmup: QuotaWarmup;
  relay: RequestRelay;
  /** The real body store (request_body) under the development key. */
  bodies: RequestBodyRepository;
  metrics: BillingMetrics;
  registry: Registry;
  log: Logger;
}

/** The activities' dependencies on `redis` and `db`, with a fresh metrics Registry. */
export function stepDeps(redis: Redis, db: Knex): StepDeps {
  const registry = new Registry();
  const scripts = createQuotaScripts(redis, { ttlSeconds: TEST_TTL_SECONDS, registry });
  const ledger = createBillingRepository(db);
  const warmup = createQuotaWarmup({ scripts, tenants: createTenantRepository(db), apiKeys: createApiKeyRepository(db), ledger });
  return {
    scripts,
    ledger,
    warmup,
    relay: createRequestRelay(redis, { ttlSeconds: TEST_TTL_SECONDS }),
    bodies: createRequestBodyRepository(db, developmentKeyring()),
    metrics: createBillingMetrics(registry),
    registry,
    log: createLogger('silent', 'activity-test'),
  };
}

export { unreachableRedis } from './services';

export interface KeySeed {
  /** null = no budget of its own. */
  budgetMicros: number | null;
  status?: 'active' | 'revoked';
}

export interface TenantSeed {
  tenantId: string;
  apiKeyIds: string[];
}

/** Inserts a tenant (a new id unless given) and its keys into tenant_quota / api_key_quota (nothing is cached in Redis). */
export async function seedTenant(db: Knex, limitMicros: number, keys: KeySeed[] = [{ budgetMicros: null }], tenantId = uniqueId('act-t')): Promise<TenantSeed> {
  await db('tenant_quota').insert({ tenant_id: tenantId, name: tenantId, quota_limit_micros: limitMicros });
  const apiKeyIds = keys.map(() => uniqueId('act-k'));
  if (apiKeyIds.length > 0) {
    await db('api_key_quota').insert(
      keys.map((key, i) => ({
        id: apiKeyIds[i],
        tenant_id: tenantId,
        name: `key ${i}`,
        key_hash: `hash-${apiKeyIds[i]}`,
        key_prefix: 'sk-test',
        budget_micros: key.budgetMicros,
        status: key.status ?? 'active',
      })),
    );
  }
  return { tenantId, apiKeyIds };
}

/** A billed request of `tenantId` / `apiKeyId`; the numbers are whatever the test states. */
export function billedInput(
  tenantId: string,
  apiKeyId: string,
  overrides: Partial<BilledRequestInput> & Pick<BilledRequestInput, 'reservedMicros'>,
): BilledRequestInput {
  const requestId = overrides.requestId ?? uniqueId('act-req');
  return {
    requestId,
    tenantId,
    apiKeyId,
    model: TEST_PRICE.model,
    price: { ...TEST_PRICE },
    promptTokens: 20,
    maxOutputTokens: TEST_PRICE.maxOutputTokens,
    stream: true,
    includeUsage: true,
    relayMode: 'redis',
    bodyRef: { requestId },
    ...overrides,
  };
}

/** The cached counters of a tenant and one of its keys (null = not cached). */
export async function cachedCounters(
  redis: Redis,
  tenantId: string,
  apiKeyId: string,
): Promise<{ limit: number | null; used: number | null; budget: number | null; spent: number | null }> {
  const tenant = await readTenantQuota(redis, tenantId);
  const key = await readKeyBudget(redis, tenantId, apiKeyId);
  return { limit: tenant?.limitMicros ?? null, used: tenant?.usedMicros ?? null, budget: key?.budgetMicros ?? null, spent: key?.spentMicros ?? null };
}

/** Ledger rows of a tenant, oldest first. */
export async function ledgerRows(db: Knex, tenantId: string): Promise<Array<Record<string, unknown>>> {
  return db('billing_transaction').where('tenant_id', tenantId).orderBy('id', 'asc');
}

/**
 * Value of the sample `name` (a counter, a gauge, or a histogram's `_count`/`_sum`)
 * with exactly these labels, read from the registry's exposition text; undefined when absent.
 */
export async function metricValue(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const text = await registry.metrics();
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).sort().join(',');
  for (const line of text.split('\n')) {
    const match = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = (match[2] ?? '').split(',').filter((p) => p !== '').sort().join(',');
    if (have === wanted) return Number(match[3]);
  }
  return undefined;
}

/**
 * Leaves nothing open behind a test: pending rows are voided (so sweeps and
 * consistency checks in other files never meet them) and the tenant's cached
 * counters are dropped with them, so Redis and the ledger still agree.
 */
export async function closeTenant(redis: Redis, ledger: BillingRepository, seed: TenantSeed): Promise<void> {
  for (const open of (await ledger.tenantUsageSnapshot(seed.tenantId)).pending) {
    await ledger.voidPendingTransaction({ requestId: open.requestId, reason: 'test cleanup' });
  }
  await redis.del(CacheKeys.tenantQuota(seed.tenantId), ...seed.apiKeyIds.map((id) => CacheKeys.apiKeyBudget(seed.tenantId, id)));
}
