/**
 * quota_release.lua: a fresh reservation the ledger could not record is given back
 * and forgotten, so Redis never counts what the ledger does not know (M3, M4.4).
 */
import type { Redis } from '../../src/redis/client';
import { Registry } from 'prom-client';
import { createQuotaScripts, type QuotaScripts } from '../../src/redis/scripts';
import { readKeyBudget, readTenantQuota } from '../../src/redis/quota-cache';
import { CacheKeys } from '../../src/redis/cache-keys';
import { testRedis, uniqueId } from '../helpers/services';

let redis: Redis;
let scripts: QuotaScripts;

beforeAll(async () => {
  redis = await testRedis();
  scripts = createQuotaScripts(redis, { ttlSeconds: 600, registry: new Registry() });
});
afterAll(() => {
  redis.disconnect();
});

async function reservedTenant(amount: number): Promise<{ tenantId: string; apiKeyId: string; requestId: string }> {
  const tenantId = uniqueId('tenant');
  const apiKeyId = 'key-1';
  const requestId = uniqueId('req');
  await scripts.warmTenant(tenantId, { limitMicros: 100_000, usedMicros: 5_000 });
  await scripts.warmKey(tenantId, apiKeyId, { budgetMicros: 50_000, spentMicros: 1_000 });
  expect(await scripts.reserve({ tenantId, apiKeyId, requestId, amountMicros: amount, nowMs: 1 })).toMatchObject({ status: 'reserved' });
  return { tenantId, apiKeyId, requestId };
}

describe('quota_release.lua', () => {
  it('gives a fresh reservation back exactly and forgets the request', async () => {
    const r = await reservedTenant(7_000);
    expect(await scripts.release(r)).toEqual({ status: 'released', releasedMicros: 7_000 });
    expect(await readTenantQuota(redis, r.tenantId)).toEqual({ limitMicros: 100_000, usedMicros: 5_000 });
    expect(await readKeyBudget(redis, r.tenantId, r.apiKeyId)).toEqual({ budgetMicros: 50_000, spentMicros: 1_000 });
    expect(await redis.exists(CacheKeys.request(r.tenantId, r.requestId))).toBe(0);
  });

  it('is a no-op the second time, and a retry of the request reserves again from scratch', async () => {
    const r = await reservedTenant(7_000);
    await scripts.release(r);
    expect(await scripts.release(r)).toEqual({ status: 'absent', releasedMicros: 0 });
    expect(await scripts.reserve({ ...r, amountMicros: 7_000, nowMs: 2 })).toMatchObject({ status: 'reserved', reservedMicros: 7_000 });
    expect((await readTenantQuota(redis, r.tenantId))?.usedMicros).toBe(12_000);
  });

  it('leaves a settled request alone', async () => {
    const r = await reservedTenant(7_000);
    await scripts.settleTenant({ tenantId: r.tenantId, requestId: r.requestId, costMicros: 3_000 });
    expect(await scripts.release(r)).toEqual({ status: 'kept', releasedMicros: 0 });
    expect((await readTenantQuota(redis, r.tenantId))?.usedMicros).toBe(8_000);
  });

  it("leaves another key's reservation alone", async () => {
    const r = await reservedTenant(7_000);
    expect(await scripts.release({ ...r, apiKeyId: 'key-2' })).toEqual({ status: 'kept', releasedMicros: 0 });
    expect((await readTenantQuota(redis, r.tenantId))?.usedMicros).toBe(12_000);
  });
});
