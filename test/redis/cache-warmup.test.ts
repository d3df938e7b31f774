/**
 * cache_warmup.lua (M2.2): a counter hash is created only when it does not exist, so
 * concurrent warm-ups cannot overwrite each other and a stale database snapshot can
 * never overwrite a live counter.
 */
import type { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { CacheKeys } from '../../src/redis/cache-keys';
import { createQuotaScripts, InvalidMicrosError, QuotaScriptName } from '../../src/redis/scripts';
import { testRedis, uniqueId } from '../helpers/services';
import { quotaFixture, rawEval, TTL_SECONDS } from './quota-fixtures';

let redis: Redis;

beforeAll(async () => {
  redis = await testRedis();
});

afterAll(async () => {
  await redis.quit();
});

function newScripts(client: Redis) {
  return createQuotaScripts(client, { ttlSeconds: TTL_SECONDS, registry: new Registry() });
}

describe('cache_warmup.lua (M2.2 warm-up with SETNX semantics)', () => {
  it('M2.2 creates the tenant and key hashes with exact integer fields and no expiry', async () => {
    const scripts = newScripts(redis);
    const tenantId = uniqueId('tenant');
    expect(await scripts.warmTenant(tenantId, { limitMicros: 25_000_000, usedMicros: 1_234_567 })).toBe(true);
    expect(await scripts.warmKey(tenantId, 'k-limited', { budgetMicros: 3_000_000, spentMicros: 42 })).toBe(true);
    expect(await scripts.warmKey(tenantId, 'k-unlimited', { budgetMicros: null, spentMicros: 0 })).toBe(true);
    expect(await redis.hgetall(CacheKeys.tenantQuota(tenantId))).toEqual({ limit_micros: '25000000', used_micros: '1234567' });
    expect(await redis.hgetall(CacheKeys.apiKeyBudget(tenantId, 'k-limited'))).toEqual({ budget_micros: '3000000', spent_micros: '42' });
    expect(await redis.hgetall(CacheKeys.apiKeyBudget(tenantId, 'k-unlimited'))).toEqual({ budget_micros: '-1', spent_micros: '0' });
    expect(await redis.ttl(CacheKeys.tenantQuota(tenantId))).toBe(-1);
  });

  it('M2.2 a second warm-up does not overwrite a live counter moved by admissions', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: null });
    await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: f.requestId(), amountMicros: 300_000, nowMs: 1 });
    // A stale snapshot from the database (used 0) arrives late.
    expect(await f.scripts.warmTenant(f.tenantId, { limitMicros: 1_000_000, usedMicros: 0 })).toBe(false);
    expect(await f.scripts.warmKey(f.tenantId, f.apiKeyId, { budgetMicros: 5, spentMicros: 0 })).toBe(false);
    expect(await redis.hgetall(f.quotaKey)).toEqual({ limit_micros: '1000000', used_micros: '300000' });
    expect(await redis.hgetall(f.budgetKey)).toEqual({ budget_micros: '-1', spent_micros: '300000' });
  });

  it('M2.2 50 concurrent warm-ups on separate connections: exactly one wins and its values stay', async () => {
    const clients = await Promise.all(Array.from({ length: 10 }, () => testRedis()));
    try {
      const tenantId = uniqueId('tenant');
      const runners = clients.map(newScripts);
      const outcomes = await Promise.all(
        Array.from({ length: 50 }, (_, i) => runners[i % runners.length]!.warmTenant(tenantId, { limitMicros: 1_000 + i, usedMicros: i })),
      );
      const winners = outcomes.flatMap((created, i) => (created ? [i] : []));
      expect(winners).toHaveLength(1);
      const winner = winners[0]!;
      expect(await redis.hgetall(CacheKeys.tenantQuota(tenantId))).toEqual({ limit_micros: String(1_000 + winner), used_micros: String(winner) });
    } finally {
      await Promise.all(clients.map((c) => c.quit()));
    }
  });

  it('M1.2 rejects an empty or odd field/value list and creates nothing', async () => {
    const key = CacheKeys.tenantQuota(uniqueId('tenant'));
    await expect(rawEval(redis, QuotaScriptName.cacheWarmup, [key], [])).rejects.toThrow(/^ERR cache_warmup expects field\/value pairs, got 0 arguments/);
    await expect(rawEval(redis, QuotaScriptName.cacheWarmup, [key], ['limit_micros', '1', 'used_micros'])).rejects.toThrow(
      /^ERR cache_warmup expects field\/value pairs, got 3 arguments/,
    );
    await expect(rawEval(redis, QuotaScriptName.cacheWarmup, [key], ['', '1'])).rejects.toThrow(/^ERR cache_warmup field names must not be empty/);
    expect(await redis.exists(key)).toBe(0);
  });

  it('M2.2 the typed warm-up refuses non-integer or negative limits before calling Redis', async () => {
    const scripts = newScripts(redis);
    const tenantId = uniqueId('tenant');
    await expect(scripts.warmTenant(tenantId, { limitMicros: 1.5, usedMicros: 0 })).rejects.toThrow(InvalidMicrosError);
    await expect(scripts.warmTenant(tenantId, { limitMicros: -1, usedMicros: 0 })).rejects.toThrow(InvalidMicrosError);
    await expect(scripts.warmKey(tenantId, 'k', { budgetMicros: -1, spentMicros: 0 })).rejects.toThrow(InvalidMicrosError);
    expect(await redis.exists(CacheKeys.tenantQuota(tenantId), CacheKeys.apiKeyBudget(tenantId, 'k'))).toBe(0);
  });
});
