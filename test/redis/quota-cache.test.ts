/** Read helpers for the cached counters (M4 sync and consistency read through them). */
import type { Redis } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';
import { CorruptQuotaCounterError, readKeyBudget, readTenantQuota } from '../../src/redis/quota-cache';
import { testRedis, uniqueId } from '../helpers/services';
import { quotaFixture } from './quota-fixtures';

let redis: Redis;

beforeAll(async () => {
  redis = await testRedis();
});

afterAll(async () => {
  await redis.quit();
});

describe('quota cache readers', () => {
  it('M4.1 reads the counters as exact integers, null budget for an unlimited key', async () => {
    const f = await quotaFixture(redis, { limitMicros: 9_007_199_254_740_991, usedMicros: 123_456_789_012, budgetMicros: null, spentMicros: 5 });
    expect(await readTenantQuota(redis, f.tenantId)).toEqual({ limitMicros: 9_007_199_254_740_991, usedMicros: 123_456_789_012 });
    expect(await readKeyBudget(redis, f.tenantId, f.apiKeyId)).toEqual({ budgetMicros: null, spentMicros: 5 });
    await redis.hset(f.budgetKey, 'budget_micros', '77');
    expect(await readKeyBudget(redis, f.tenantId, f.apiKeyId)).toEqual({ budgetMicros: 77, spentMicros: 5 });
  });

  it('M2.2 returns null when the counters are not cached', async () => {
    const tenantId = uniqueId('tenant');
    expect(await readTenantQuota(redis, tenantId)).toBeNull();
    expect(await readKeyBudget(redis, tenantId, 'k')).toBeNull();
  });

  it('refuses a corrupt counter instead of returning a float or NaN', async () => {
    const tenantId = uniqueId('tenant');
    await redis.hset(CacheKeys.tenantQuota(tenantId), 'limit_micros', '100', 'used_micros', '1.5');
    await expect(readTenantQuota(redis, tenantId)).rejects.toThrow(CorruptQuotaCounterError);
    await redis.hset(CacheKeys.apiKeyBudget(tenantId, 'k'), 'spent_micros', '3');
    await expect(readKeyBudget(redis, tenantId, 'k')).rejects.toThrow(/budget_micros is not a safe integer: undefined/);
  });
});
