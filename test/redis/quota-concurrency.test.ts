/**
 * No overspend by races (M2.1, M10.2, docs/architecture.md "Invariants"): hundreds of
 * concurrent reservations from several connections on one tenant never pass a limit
 * and leave exact counters.
 */
import type { Redis } from '../../src/redis/client';
import { Registry } from 'prom-client';
import { CacheKeys } from '../../src/redis/cache-keys';
import { createQuotaScripts, type QuotaScripts, type ReserveStatus } from '../../src/redis/scripts';
import { readKeyBudget, readTenantQuota } from '../../src/redis/quota-cache';
import { testRedis, uniqueId } from '../helpers/services';
import { TTL_SECONDS } from './quota-fixtures';

let redis: Redis;
let clients: Redis[];
let runners: QuotaScripts[];

beforeAll(async () => {
  redis = await testRedis();
  clients = await Promise.all(Array.from({ length: 8 }, () => testRedis()));
  const registry = new Registry();
  runners = clients.map((client) => createQuotaScripts(client, { ttlSeconds: TTL_SECONDS, registry }));
});

afterAll(async () => {
  await Promise.all([redis, ...clients].map((c) => c.quit()));
});

function tally(statuses: ReserveStatus[]): Partial<Record<ReserveStatus, number>> {
  const counts: Partial<Record<ReserveStatus, number>> = {};
  for (const s of statuses) counts[s] = (counts[s] ?? 0) + 1;
  return counts;
}

/** Fires every reservation at once, spread round-robin over the connections. */
async function reserveAll(tenantId: string, apiKeyIds: string[], amountMicros: number): Promise<ReserveStatus[]> {
  const results = await Promise.all(
    apiKeyIds.map((apiKeyId, i) =>
      runners[i % runners.length]!.reserve({ tenantId, apiKeyId, requestId: uniqueId(`req-${i}`), amountMicros, nowMs: Date.now() }),
    ),
  );
  return results.map((r) => r.status);
}

describe('concurrent admission on one tenant (M2.1 no check-then-act race)', () => {
  it('M2.1 M10.2 200 x 7,000 against a 1,000,000 limit: exactly 142 admitted, used 994,000, remaining 6,000', async () => {
    const tenantId = uniqueId('tenant');
    const apiKeyId = uniqueId('key');
    await runners[0]!.warmTenant(tenantId, { limitMicros: 1_000_000, usedMicros: 0 });
    await runners[0]!.warmKey(tenantId, apiKeyId, { budgetMicros: null, spentMicros: 0 });

    const statuses = await reserveAll(tenantId, Array.from({ length: 200 }, () => apiKeyId), 7_000);

    expect(tally(statuses)).toEqual({ reserved: 142, insufficient_quota: 58 });
    expect(await readTenantQuota(redis, tenantId)).toEqual({ limitMicros: 1_000_000, usedMicros: 994_000 });
    expect(await readKeyBudget(redis, tenantId, apiKeyId)).toEqual({ budgetMicros: null, spentMicros: 994_000 });
    const last = await runners[0]!.reserve({ tenantId, apiKeyId, requestId: uniqueId('req'), amountMicros: 6_000, nowMs: 1 });
    expect(last).toEqual({ status: 'reserved', reservedMicros: 6_000, tenantRemainingMicros: 0, keyRemainingMicros: null });
    const records = await redis.keys(`${CacheKeys.request(tenantId, 'x').slice(0, -1)}*`);
    expect(records).toHaveLength(143);
  });

  it('M2.1 M10.2 a key budget tighter than the tenant: key A stops at its budget, key B takes the rest', async () => {
    const tenantId = uniqueId('tenant');
    // One reservation of room to spare: the tenant never fills, so every denial of A is its budget,
    // whatever order the 200 calls arrive in (a full tenant would answer insufficient_quota first).
    await runners[0]!.warmTenant(tenantId, { limitMicros: 1_001_000, usedMicros: 0 });
    await runners[0]!.warmKey(tenantId, 'key-a', { budgetMicros: 300_000, spentMicros: 0 });
    await runners[0]!.warmKey(tenantId, 'key-b', { budgetMicros: null, spentMicros: 0 });
    // Interleaved: A, B, A, B, ... 100 each. A fits 42 (294,000), B fits 100: 142 in all.
    const keys = Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? 'key-a' : 'key-b'));

    const statuses = await reserveAll(tenantId, keys, 7_000);

    const byKey = (k: string) => tally(statuses.filter((_, i) => keys[i] === k));
    expect(byKey('key-a')).toEqual({ reserved: 42, budget_exceeded: 58 });
    expect(byKey('key-b')).toEqual({ reserved: 100 });
    expect(await readTenantQuota(redis, tenantId)).toEqual({ limitMicros: 1_001_000, usedMicros: 994_000 });
    expect(await readKeyBudget(redis, tenantId, 'key-a')).toEqual({ budgetMicros: 300_000, spentMicros: 294_000 });
    expect(await readKeyBudget(redis, tenantId, 'key-b')).toEqual({ budgetMicros: null, spentMicros: 700_000 });
  });

  it('M2.1 M10.2 oversubscribed by both limits: totals stay exact whichever request wins each race', async () => {
    const tenantId = uniqueId('tenant');
    await runners[0]!.warmTenant(tenantId, { limitMicros: 1_000_000, usedMicros: 0 });
    await runners[0]!.warmKey(tenantId, 'key-a', { budgetMicros: 300_000, spentMicros: 0 });
    await runners[0]!.warmKey(tenantId, 'key-b', { budgetMicros: null, spentMicros: 0 });
    const keys = Array.from({ length: 300 }, (_, i) => (i % 3 === 0 ? 'key-a' : 'key-b'));

    const statuses = await reserveAll(tenantId, keys, 7_000);

    const admittedA = statuses.filter((s, i) => s === 'reserved' && keys[i] === 'key-a').length;
    const admittedB = statuses.filter((s, i) => s === 'reserved' && keys[i] === 'key-b').length;
    expect(admittedA + admittedB).toBe(142);
    expect(admittedA).toBeLessThanOrEqual(42);
    expect(statuses.filter((s, i) => s === 'budget_exceeded' && keys[i] === 'key-b')).toHaveLength(0);
    expect(await readTenantQuota(redis, tenantId)).toEqual({ limitMicros: 1_000_000, usedMicros: 994_000 });
    expect(await readKeyBudget(redis, tenantId, 'key-a')).toEqual({ budgetMicros: 300_000, spentMicros: 7_000 * admittedA });
    expect(await readKeyBudget(redis, tenantId, 'key-b')).toEqual({ budgetMicros: null, spentMicros: 7_000 * admittedB });
  });

  it('M12 the same request id sent 50 times concurrently is reserved exactly once', async () => {
    const tenantId = uniqueId('tenant');
    await runners[0]!.warmTenant(tenantId, { limitMicros: 1_000_000, usedMicros: 0 });
    await runners[0]!.warmKey(tenantId, 'k', { budgetMicros: null, spentMicros: 0 });
    const requestId = uniqueId('req');
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => runners[i % runners.length]!.reserve({ tenantId, apiKeyId: 'k', requestId, amountMicros: 12_345, nowMs: 1 })),
    );
    expect(tally(results.map((r) => r.status))).toEqual({ reserved: 1, duplicate: 49 });
    expect(results.every((r) => 'reservedMicros' in r && r.reservedMicros === 12_345)).toBe(true);
    expect(await readTenantQuota(redis, tenantId)).toEqual({ limitMicros: 1_000_000, usedMicros: 12_345 });
  });
});
