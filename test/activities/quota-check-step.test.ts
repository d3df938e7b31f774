/**
 * QuotaCheckStep (M2, M10.1) on the real Redis and PostgreSQL: one atomic Lua
 * reservation (M2.1), the warm-up from the ledger on a cold cache (M2.2), the
 * PostgreSQL fallback while Redis is unreachable (M2.3), idempotency per request id
 * (M3.5), no overspend under concurrency (M12) and the admission metrics (M13).
 */
import type { Knex } from 'knex';
import { createQuotaCheckStep } from '../../src/activities/quota-check-step';
import { createQuotaWarmup } from '../../src/redis/quota-warmup';
import { createApiKeyRepository } from '../../src/db/api-key-repository';
import { createTenantRepository } from '../../src/db/tenant-repository';
import type { Redis } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';
import { createQuotaScripts } from '../../src/redis/scripts';
import { testDb, testRedis } from '../helpers/services';
import {
  TEST_TTL_SECONDS,
  billedInput,
  cachedCounters,
  closeTenant,
  ledgerRows,
  metricValue,
  seedTenant,
  stepDeps,
  unreachableRedis,
  type StepDeps,
  type TenantSeed,
} from '../helpers/activity-deps';

let redis: Redis;
let db: Knex;
const seeds: TenantSeed[] = [];

beforeAll(async () => {
  redis = await testRedis();
  db = testDb();
});
afterAll(async () => {
  const deps = stepDeps(redis, db);
  for (const seed of seeds) await closeTenant(redis, deps.ledger, seed);
  await db.destroy();
  redis.disconnect();
});

async function tenant(limitMicros: number, keys?: Parameters<typeof seedTenant>[2]): Promise<TenantSeed> {
  const seed = await seedTenant(db, limitMicros, keys);
  seeds.push(seed);
  return seed;
}

function quotaCheck(deps: StepDeps, now = 1_700_000_000_000) {
  return createQuotaCheckStep({ ...deps, now: () => now });
}

async function requestRecord(tenantId: string, requestId: string): Promise<Record<string, string>> {
  return redis.hgetall(CacheKeys.request(tenantId, requestId));
}

describe('QuotaCheckStep: Redis admission (M2.1)', () => {
  it('admits through Redis and records a pending ledger row with the reservation and admission_path redis (M2.1, M3.4)', async () => {
    const { tenantId, apiKeyIds: [keyId] } = await tenant(1_000_000, [{ budgetMicros: 500_000 }]);
    const deps = stepDeps(redis, db);
    const input = billedInput(tenantId, keyId!, { reservedMicros: 120_000, promptTokens: 37 });

    const decision = await quotaCheck(deps, 1_700_000_123_456)(input);

    expect(decision).toEqual({ admitted: true, reservedMicros: 120_000, path: 'redis', duplicate: false });
    const rows = await ledgerRows(db, tenantId);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      request_id: input.requestId,
      api_key_id: keyId,
      kind: 'usage',
      status: 'pending',
      reserved_micros: '120000',
      admission_path: 'redis',
      amount_micros: null,
      prompt_tokens: 37,
      model: 'mock-small',
      workflow_id: `billed-request:${input.requestId}`,
    });
    expect(await cachedCounters(redis, tenantId, keyId!)).toEqual({ limit: 1_000_000, used: 120_000, budget: 500_000, spent: 120_000 });
    expect(await requestRecord(tenantId, input.requestId)).toEqual({ reserved_micros: '120000', api_key_id: keyId, reserved_at: '1700000123456' });
    expect(await redis.ttl(CacheKeys.request(tenantId, input.requestId))).toBeGreaterThan(TEST_TTL_SECONDS - 10);
  });

  it('gives the Redis reservation back when the pending ledger row cannot be written; the retry is counted once', async () => {
    const { tenantId, apiKeyIds: [keyId] } = await tenant(1_000_000, [{ budgetMicros: 500_000 }]);
    const deps = stepDeps(redis, db);
    const input = billedInput(tenantId, keyId!, { reservedMicros: 120_000 });
    const broken = { ...deps, ledger: { ...deps.ledger, createPendingTransaction: () => Promise.reject(new Error('ledger unavailable')) } };

    await expect(quotaCheck(broken)(input)).rejects.toThrow('ledger unavailable');
    expect(await cachedCounters(redis, tenantId, keyId!)).toEqual({ limit: 1_000_000, used: 0, budget: 500_000, spent: 0 });
    expect(await requestRecord(tenantId, input.requestId)).toEqual({});
    expect(await ledgerRows(db, tenantId)).toEqual([]);

    // The activity's retry, with the ledger back: reserved once, recorded once.
    expect(await quotaCheck(deps)(input)).toEqual({ admitted: true, reservedMicros: 120_000, path: 'redis', duplicate: false });
    expect(await cachedCounters(redis, tenantId, keyId!)).toEqual({ limit: 1_000_000, used: 120_000, budget: 500_000, spent: 120_000 });
    expect(await ledgerRows(db, tenantId)).toHaveLength(1);
  });

  it('admits at the exact limit (used + amount == limit) and denies one micro more', async () => {
    const { tenantId, apiKeyIds: [keyId] } = await tenant(300_000);
    const check = quotaCheck(stepDeps(redis, db));

    expect(await check(billedInput(tenantId, keyId!, { reservedMicros: 200_000 }))).toMatchObject({ admitted: true });
    expect(await check(billedInput(tenantId, keyId!, { reservedMicros: 100_001 }))).toEqual({ admitted: false, reason: 'insufficient_quota', path: 'redis' });
    expect(await check(billedInput(tenantId, keyId!, { reservedMicros: 100_000 }))).toEqual({ admitted: true, reservedMicros: 100_000, path: 'redis', duplicate: false });
    expect(await cachedCounters(redis, tenantId, keyId!)).toMatchObject({ used: 300_000, spent: 300_000 });
    expect(await stepDeps(redis, db).ledger.tenantLedgerUsage(tenantId)).toBe(300_000);
  });

  it('denies with insufficient_quota when the tenant quota is exhausted and writes nothing', async () => {
    const { tenantId, apiKeyIds: [keyId] } = await tenant(100_000);
    const check = quotaCheck(stepDeps(redis, db));
    const first = billedInput(tenantId, keyId!, { reservedMicros: 80_000 });
    await check(first);

    const denied = billedInput(tenantId, keyId!, { reservedMicros: 20_001 });
    expect(await check(denied)).toEqual({ admitted: false, reason: 'insufficient_quota', path: 'redis' });

    expect((await ledgerRows(db, tenantId)).map((r) => r.request_id)).toEqual([first.requestId]);
    expect(await requestRecord(tenantId, denied.requestId)).toEqual({});
    expect(await cachedCounters(redis, tenantId, keyId!)).toMatchObject({ used: 80_000, spent: 80_000 });
  });

  it('denies with budget_exceeded when the key budget is exhausted while the tenant still has room', async () => {
    const { tenantId, apiKeyIds: [limited, other] } = await tenant(1_000_000, [{ budgetMicros: 150_000 }, { budgetMicros: null }]);
    const check = quotaCheck(stepDeps(redis, db));
    expect(await check(billedInput(tenantId, limited!, { reservedMicros: 100_000 }))).toMatchObject({ admitted: true });

    const denied = billedInput(tenantId, limited!, { reservedMicros: 50_001 });
    expect(await check(denied)).toEqual({ admitted: false, reason: 'budget_exceeded', path: 'redis' });
    // The tenant is not the limit: another key of it is still admitted.
    expect(await check(billedInput(tenantId, other!, { reservedMicros: 500_000 }))).toMatchObject({ admitted: true, path: 'redis' });

    expect(await ledgerRows(db, tenantId)).toHaveLength(2);
    expect(await requestRecord(tenantId, denied.requestId)).toEqual({});
    expect(await cachedCounters(redis, tenantId, limited!)).toEqual({ limit: 1_000_000, used: 600_000, budget: 150_000, spent: 100_000 });
  });

  it('denies an unknown tenant (tenant_missing) and a revoked or foreign key (key_missing), writing nothing', async () => {
    const { tenantId, apiKeyIds: [active, revoked] } = await tenant(1_000_000, [{ budgetMicros: null }, { budgetMicros: null, status: 'revoked' }]);
    const foreign = await tenant(1_000_000);
    const check = quotaCheck(stepDeps(redis, db));

    const unknownTenant = billedInput('act-no-such-tenant', active!, { reservedMicros: 1_000 });
    expect(await check(unknownTenant)).toEqual({ admitted: false, reason: 'tenant_missing', path: 'redis' });
    expect(await redis.exists(CacheKeys.tenantQuota('act-no-such-tenant'))).toBe(0);

    const revokedKey = billedInput(tenantId, revoked!, { reservedMicros: 1_000 });
    expect(await check(revokedKey)).toEqual({ admitted: false, reason: 'key_missing', path: 'redis' });
    const foreignKey = billedInput(tenantId, foreign.apiKeyIds[0]!, { reservedMicros: 1_000 });
    expect(await check(foreignKey)).toEqual({ admitted: false, reason: 'key_missing', path: 'redis' });

    expect(await ledgerRows(db, tenantId)).toEqual([]);
    expect(await db('billing_transaction').where('request_id', unknownTenant.requestId)).toEqual([]);
    expect(await redis.exists(CacheKeys.apiKeyBudget(tenantId, revoked!), CacheKeys.apiKeyBudget(tenantId, foreign.apiKeyIds[0]!))).toBe(0);
    expect(await requestRecord(tenantId, revokedKey.requestId)).toEqual({});
    // The tenant hash was warmed for the key lookup, but nothing was reserved on it.
    expect(await cachedCounters(redis, tenantId, active!)).toMatchObject({ limit: 1_000_000, used: 0 });
  });

  it('answers a second call of the same request id as duplicate with the ORIGINAL amount: one ledger row, charged once (M3.5)', async () => {
    const { tenantId, apiKeyIds: [keyId] } = await tenant(1_000_000, [{ budgetMicros: 900_000 }]);
    const check = quotaCheck(stepDeps(redis, db));
    const input = billedInput(tenantId, keyId!, { reservedMicros: 250_000 });

    expect(await check(input)).toEqual({ admitted: true, reservedMicros: 250_000, path: 'redis', duplicate: false });
    // A retry that (wrongly) carries another estimate must not change the reservation.
    expect(await check({ ...input, reservedMicros: 40_000 })).toEqual({ admitted: true, reservedMicros: 250_000, path: 'redis', duplicate: true });

    const rows = await ledgerRows(db, tenantId);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ request_id: input.requestId, reserved_micros: '250000', status: 'pending' });
    expect(await cachedCounters(redis, tenantId, keyId!)).toMatchObject({ used: 250_000, spent: 250_000 });
  });
});

describe('QuotaCheckStep: cold cache warm-up (M2.2)', () => {
  it('warms tenant and key from PostgreSQL, then admits: counters equal the limit, the budget and the ledger usage', async () => {
    const { tenantId, apiKeyIds: [keyId] } = await tenant(2_000_000, [{ budgetMicros: 700_000 }]);
    const deps = stepDeps(redis, db);
    expect(await cachedCounters(redis, tenantId, keyId!)).toEqual({ limit: null, used: null, budget: null, spent: null });

    const input = billedInput(tenantId, keyId!, { reservedMicros: 123_456 });
    expect(await quotaCheck(deps)(input)).toEqual({ admitted: true, reservedMicros: 123_456, path: 'redis', duplicate: false });

    expect(await cachedCounters(redis, tenantId, keyId!)).toEqual({ limit: 2_000_000, used: 123_456, budget: 700_000, spent: 123_456 });
    expect(await deps.ledger.tenantLedgerUsage(tenantId)).toBe(123_456);
    expect(await deps.ledger.apiKeyLedgerSpend(keyId!)).toBe(123_456);
  });

  it('warms used/spent from committed amounts plus pending reservations; voided rows and top-ups do not count', async () => {
    const { tenantId, apiKeyIds: [keyId] } = await tenant(1_000_000, [{ budgetMicros: 600_000 }]);
    const deps = stepDeps(redis, db);
    const history = (reservedMicros: number) => ({
      requestId: `${tenantId}-h-${reservedMicros}`, tenantId, apiKeyId: keyId!, workflowId: null, model: 'mock-small', reservedMicros, admissionPath: 'redis' as const,
    });
    await deps.ledger.createPendingTransaction(history(90_000));
    await deps.ledger.commitPendingTransaction({ requestId: `${tenantId}-h-90000`, amountMicros: 31_000, promptTokens: 10, completionTokens: 20, tokenSource: 'upstream' });
    await deps.ledger.createPendingTransaction(history(50_000));
    await deps.ledger.createPendingTransaction(history(70_000));
    await deps.ledger.voidPendingTransaction({ requestId: `${tenantId}-h-70000`, reason: 'no output' });
    await deps.ledger.recordTransaction({ requestId: `${tenantId}-topup`, tenantId, kind: 'topup', amountMicros: 999_999 });

    await quotaCheck(deps)(billedInput(tenantId, keyId!, { reservedMicros: 10_000 }));

    // 31,000 committed + 50,000 pending + the new 10,000.
    expect(await cachedCounters(redis, tenantId, keyId!)).toEqual({ limit: 1_000_000, used: 91_000, budget: 600_000, spent: 91_000 });
    expect(await deps.ledger.tenantLedgerUsage(tenantId)).toBe(91_000);
    // The warmed figure is what the next admission is checked against: 909,000 left on the tenant, 509,000 on the key.
    expect(await quotaCheck(deps)(billedInput(tenantId, keyId!, { reservedMicros: 509_001 }))).toEqual({ admitted: false, reason: 'budget_exceeded', path: 'redis' });
  });
});

describe('QuotaCheckStep: PostgreSQL fallback while Redis is unreachable (M2.3)', () => {
  let down: Redis;
  beforeAll(() => {
    down = unreachableRedis();
  });
  afterAll(() => {
    down.disconnect();
  });

  it('admits on the ledger (path postgres), respects the limit exactly, denies past it, and stays idempotent', async () => {
    const { tenantId, apiKeyIds: [keyId] } = await tenant(100_000, [{ budgetMicros: null }]);
    const deps = stepDeps(down, db);
    const check = quotaCheck(deps);

    const first = billedInput(tenantId, keyId!, { reservedMicros: 40_000 });
    expect(await check(first)).toEqual({ admitted: true, reservedMicros: 40_000, path: 'postgres', duplicate: false });
    expect(await check(billedInput(tenantId, keyId!, { reservedMicros: 40_000 }))).toMatchObject({ admitted: true, path: 'postgres' });
    expect(await check(billedInput(tenantId, keyId!, { reservedMicros: 20_001 }))).toEqual({ admitted: false, reason: 'insufficient_quota', path: 'postgres' });
    expect(await check(billedInput(tenantId, keyId!, { reservedMicros: 20_000 }))).toEqual({ admitted: true, reservedMicros: 20_000, path: 'postgres', duplicate: false });
    expect(await check(billedInput(tenantId, keyId!, { reservedMicros: 1 }))).toEqual({ admitted: false, reason: 'insufficient_quota', path: 'postgres' });
    expect(await check({ ...first, reservedMicros: 5 })).toEqual({ admitted: true, reservedMicros: 40_000, path: 'postgres', duplicate: true });

    const rows = await ledgerRows(db, tenantId);
    expect(rows.map((r) => [r.reserved_micros, r.admission_path, r.status])).toEqual([
      ['40000', 'postgres', 'pending'],
      ['40000', 'postgres', 'pending'],
      ['20000', 'postgres', 'pending'],
    ]);
    expect(await deps.ledger.tenantLedgerUsage(tenantId)).toBe(100_000);
    expect(await metricValue(deps.registry, 'billing_redis_fallback_active')).toBe(1);
    expect(await metricValue(deps.registry, 'billing_admission_total', { outcome: 'admitted', path: 'postgres' })).toBe(3);
    expect(await metricValue(deps.registry, 'billing_admission_total', { outcome: 'insufficient_quota', path: 'postgres' })).toBe(2);
    expect(await metricValue(deps.registry, 'billing_admission_total', { outcome: 'duplicate', path: 'postgres' })).toBe(1);
  });

  it('a duplicate of a request admitted through Redis keeps path redis when the retry meets the fallback', async () => {
    const { tenantId, apiKeyIds: [keyId] } = await tenant(500_000);
    const input = billedInput(tenantId, keyId!, { reservedMicros: 60_000 });
    expect(await quotaCheck(stepDeps(redis, db))(input)).toMatchObject({ admitted: true, path: 'redis' });

    // The path is reported as first admitted; settlement no longer depends on it (the request record tells what Redis counted).
    expect(await quotaCheck(stepDeps(down, db))(input)).toEqual({ admitted: true, reservedMicros: 60_000, path: 'redis', duplicate: true });
    expect(await ledgerRows(db, tenantId)).toHaveLength(1);
  });

  it('a fallback admission counted by a later warm-up: a Redis retry of it is a duplicate of the original amount and reserves nothing again (M2.2, M3.5)', async () => {
    const { tenantId, apiKeyIds: [keyId] } = await tenant(1_000_000, [{ budgetMicros: 500_000 }]);
    const deps = stepDeps(redis, db);
    const fallback = billedInput(tenantId, keyId!, { reservedMicros: 70_000 });
    expect(await quotaCheck(stepDeps(down, db))(fallback)).toMatchObject({ admitted: true, path: 'postgres' });
    // Redis answers again, cold: this admission warms both counters from the ledger (70,000 pending) and reserves 30,000.
    expect(await quotaCheck(deps)(billedInput(tenantId, keyId!, { reservedMicros: 30_000 }))).toMatchObject({ admitted: true, path: 'redis' });
    expect(await cachedCounters(redis, tenantId, keyId!)).toEqual({ limit: 1_000_000, used: 100_000, budget: 500_000, spent: 100_000 });

    expect(await quotaCheck(deps)(fallback)).toEqual({ admitted: true, reservedMicros: 70_000, path: 'redis', duplicate: true });

    expect(await cachedCounters(redis, tenantId, keyId!)).toMatchObject({ used: 100_000, spent: 100_000 });
    expect(await deps.ledger.tenantLedgerUsage(tenantId)).toBe(100_000);
    const record = await requestRecord(tenantId, fallback.requestId);
    expect(record).toEqual({
      reserved_micros: '70000',
      tenant_counted_micros: '70000',
      tenant_warmup_id: await redis.hget(CacheKeys.tenantQuota(tenantId), 'warmup_id'),
      key_counted_micros: '70000',
      key_warmup_id: await redis.hget(CacheKeys.apiKeyBudget(tenantId, keyId!), 'warmup_id'),
    });
  });

  it('denies an unknown tenant and a revoked key on the fallback too', async () => {
    const { tenantId, apiKeyIds: [revoked] } = await tenant(500_000, [{ budgetMicros: null, status: 'revoked' }]);
    const check = quotaCheck(stepDeps(down, db));
    expect(await check(billedInput('act-no-such-tenant', revoked!, { reservedMicros: 1 }))).toEqual({ admitted: false, reason: 'tenant_missing', path: 'postgres' });
    expect(await check(billedInput(tenantId, revoked!, { reservedMicros: 1 }))).toEqual({ admitted: false, reason: 'key_missing', path: 'postgres' });
    expect(await ledgerRows(db, tenantId)).toEqual([]);
  });
});

describe('QuotaCheckStep: concurrency and metrics (M2.1, M2.2, M13)', () => {
  it('50 concurrent steps on a cold tenant never pass the limit: exactly 33 admitted, used == ledger usage == limit', async () => {
    const { tenantId, apiKeyIds: [keyId] } = await tenant(1_000_000, [{ budgetMicros: null }]);
    const deps = stepDeps(redis, db);
    // 10,000 already committed, so 33 x 30,000 fill the remaining 990,000 exactly.
    await deps.ledger.recordTransaction({ requestId: `${tenantId}-old`, tenantId, apiKeyId: keyId!, kind: 'usage', amountMicros: 10_000 });
    // Separate runners and warm-ups per step, as separate workers would have; all race on the SETNX warm-up.
    const steps = Array.from({ length: 50 }, () => {
      const scripts = createQuotaScripts(redis, { ttlSeconds: TEST_TTL_SECONDS, registry: deps.registry });
      const warmup = createQuotaWarmup({ scripts, tenants: createTenantRepository(db), apiKeys: createApiKeyRepository(db), ledger: deps.ledger });
      return createQuotaCheckStep({ ...deps, scripts, warmup });
    });

    const decisions = await Promise.all(steps.map((step) => step(billedInput(tenantId, keyId!, { reservedMicros: 30_000 }))));

    const admitted = decisions.filter((d) => d.admitted);
    expect(admitted).toHaveLength(33);
    expect(decisions.filter((d) => !d.admitted && d.reason === 'insufficient_quota')).toHaveLength(17);
    const reservedSum = admitted.reduce((sum, d) => sum + (d.admitted ? d.reservedMicros : 0), 0);
    expect(reservedSum).toBe(990_000);
    expect(await cachedCounters(redis, tenantId, keyId!)).toEqual({ limit: 1_000_000, used: 1_000_000, budget: null, spent: 1_000_000 });
    expect(await deps.ledger.tenantLedgerUsage(tenantId)).toBe(1_000_000);
    expect(await deps.ledger.apiKeyLedgerSpend(keyId!)).toBe(1_000_000);
    expect((await ledgerRows(db, tenantId)).filter((r) => r.status === 'pending')).toHaveLength(33);
  });

  it('counts every decision in billing_admission_total by outcome and path, and times it', async () => {
    const { tenantId, apiKeyIds: [keyId, small] } = await tenant(100_000, [{ budgetMicros: null }, { budgetMicros: 5_000 }]);
    const deps = stepDeps(redis, db);
    const check = quotaCheck(deps);
    const input = billedInput(tenantId, keyId!, { reservedMicros: 60_000 });
    await check(input);
    await check(input);
    await check(billedInput(tenantId, keyId!, { reservedMicros: 50_000 }));
    await check(billedInput(tenantId, small!, { reservedMicros: 5_001 }));
    await check(billedInput('act-no-such-tenant', keyId!, { reservedMicros: 1 }));

    const admissions = (labels: Record<string, string>) => metricValue(deps.registry, 'billing_admission_total', labels);
    expect(await admissions({ outcome: 'admitted', path: 'redis' })).toBe(1);
    expect(await admissions({ outcome: 'duplicate', path: 'redis' })).toBe(1);
    expect(await admissions({ outcome: 'insufficient_quota', path: 'redis' })).toBe(1);
    expect(await admissions({ outcome: 'budget_exceeded', path: 'redis' })).toBe(1);
    expect(await admissions({ outcome: 'tenant_missing', path: 'redis' })).toBe(1);
    expect(await admissions({ outcome: 'admitted', path: 'postgres' })).toBeUndefined();
    expect(await metricValue(deps.registry, 'billing_admission_duration_seconds_count', { outcome: 'admitted' })).toBe(1);
    expect(await metricValue(deps.registry, 'billing_redis_fallback_active')).toBe(0);
  });
});
