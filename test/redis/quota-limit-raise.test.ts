/**
 * quota_limit_raise.lua through the scripts runner: a committed top-up's limit reaches
 * the cached tenant quota with max() semantics, never touches used_micros, and reloads
 * itself after SCRIPT FLUSH (M1.2).
 */
import { Registry } from 'prom-client';
import { CacheKeys } from '../../src/redis/cache-keys';
import type { Redis } from '../../src/redis/client';
import { createQuotaScripts, InvalidMicrosError, QuotaScriptRejectedError, type QuotaScripts } from '../../src/redis/scripts';
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

describe('quota_limit_raise.lua', () => {
  it('raises a lower cached limit, keeps a higher one, and never touches used_micros', async () => {
    const tenant = uniqueId('lua');
    const key = CacheKeys.tenantQuota(tenant);
    await redis.hset(key, { limit_micros: '100', used_micros: '70' });

    expect(await scripts.raiseTenantLimit(tenant, 250)).toEqual({ status: 'raised', limitMicros: 250 });
    expect(await scripts.raiseTenantLimit(tenant, 200)).toEqual({ status: 'kept', limitMicros: 250 });
    expect(await scripts.raiseTenantLimit(tenant, 250)).toEqual({ status: 'kept', limitMicros: 250 });
    // Only the raise moved the counter: one version bump (the consistency check's token).
    expect(await redis.hgetall(key)).toEqual({ limit_micros: '250', used_micros: '70', version: '1' });
  });

  it('leaves a tenant that is not cached alone', async () => {
    const tenant = uniqueId('lua');
    expect(await scripts.raiseTenantLimit(tenant, 10)).toEqual({ status: 'tenant_missing' });
    expect(await redis.exists(CacheKeys.tenantQuota(tenant))).toBe(0);
  });

  it('handles limits up to 2^53 - 1 exactly', async () => {
    const tenant = uniqueId('lua');
    await redis.hset(CacheKeys.tenantQuota(tenant), { limit_micros: String(Number.MAX_SAFE_INTEGER - 1), used_micros: '0' });

    expect(await scripts.raiseTenantLimit(tenant, Number.MAX_SAFE_INTEGER)).toEqual({ status: 'raised', limitMicros: Number.MAX_SAFE_INTEGER });
    expect(await redis.hget(CacheKeys.tenantQuota(tenant), 'limit_micros')).toBe('9007199254740991');
  });

  it('refuses a corrupt cached limit and malformed arguments without writing', async () => {
    const tenant = uniqueId('lua');
    const key = CacheKeys.tenantQuota(tenant);
    await redis.hset(key, { limit_micros: '12.5', used_micros: '0' });

    await expect(scripts.raiseTenantLimit(tenant, 100)).rejects.toBeInstanceOf(QuotaScriptRejectedError);
    expect(await redis.hget(key, 'limit_micros')).toBe('12.5');
    await expect(scripts.raiseTenantLimit(tenant, 1.5)).rejects.toBeInstanceOf(InvalidMicrosError);
    await expect(scripts.raiseTenantLimit(tenant, -1)).rejects.toBeInstanceOf(InvalidMicrosError);
    expect(await redis.hget(key, 'limit_micros')).toBe('12.5');
  });

  it('M1.2 reloads itself after SCRIPT FLUSH (NOSCRIPT)', async () => {
    const tenant = uniqueId('lua');
    await redis.hset(CacheKeys.tenantQuota(tenant), { limit_micros: '1', used_micros: '0' });
    await redis.script('FLUSH');

    expect(await scripts.raiseTenantLimit(tenant, 2)).toEqual({ status: 'raised', limitMicros: 2 });
  });
});
