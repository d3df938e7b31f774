/**
 * cache_warmup.lua (M2.2): a counter hash is created only when it does not exist, so
 * concurrent warm-ups cannot overwrite each other and a stale database snapshot can
 * never overwrite a live counter. Only the warm-up that creates the hash marks the
 * request records of the reservations it counted (what settlement subtracts, M3.2).
 */
import type { Redis } from '../../src/redis/client';
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

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('cache_warmup.lua (M2.2 warm-up with SETNX semantics)', () => {
  it('M2.2 creates the tenant and key hashes with exact integer fields, a fresh warmup_id each, and no expiry', async () => {
    const scripts = newScripts(redis);
    const tenantId = uniqueId('tenant');
    expect(await scripts.warmTenant(tenantId, { limitMicros: 25_000_000, usedMicros: 1_234_567 })).toBe(true);
    expect(await scripts.warmKey(tenantId, 'k-limited', { budgetMicros: 3_000_000, spentMicros: 42 })).toBe(true);
    expect(await scripts.warmKey(tenantId, 'k-unlimited', { budgetMicros: null, spentMicros: 0 })).toBe(true);
    const tenant = await redis.hgetall(CacheKeys.tenantQuota(tenantId));
    const limited = await redis.hgetall(CacheKeys.apiKeyBudget(tenantId, 'k-limited'));
    const unlimited = await redis.hgetall(CacheKeys.apiKeyBudget(tenantId, 'k-unlimited'));
    expect(tenant).toEqual({ limit_micros: '25000000', used_micros: '1234567', warmup_id: expect.stringMatching(UUID), version: expect.stringMatching(/^[1-9][0-9]{15}$/) });
    expect(limited).toEqual({ budget_micros: '3000000', spent_micros: '42', warmup_id: expect.stringMatching(UUID), version: expect.stringMatching(/^[1-9][0-9]{15}$/) });
    expect(unlimited).toEqual({ budget_micros: '-1', spent_micros: '0', warmup_id: expect.stringMatching(UUID), version: expect.stringMatching(/^[1-9][0-9]{15}$/) });
    expect(new Set([tenant.warmup_id, limited.warmup_id, unlimited.warmup_id]).size).toBe(3);
    expect(await redis.ttl(CacheKeys.tenantQuota(tenantId))).toBe(-1);
  });

  it('M2.2 M3.2 the tenant warm-up marks each pending reservation it counted, and the settled request with its cost', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: null });
    const viaRedis = f.requestId();
    await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: viaRedis, amountMicros: 30_000, nowMs: 7 });
    const viaFallback = f.requestId();
    const settled = f.requestId();
    await redis.del(f.quotaKey);

    const marks = { pending: [{ requestId: viaRedis, reservedMicros: 30_000 }, { requestId: viaFallback, reservedMicros: 20_000 }], settled: { requestId: settled, costMicros: 1_500 } };
    expect(await f.scripts.warmTenant(f.tenantId, { limitMicros: 1_000_000, usedMicros: 51_500 }, marks)).toBe(true);

    const warmupId = await redis.hget(f.quotaKey, 'warmup_id');
    expect(warmupId).toMatch(UUID);
    // quota_check's record keeps its own fields (reserved_micros is only set when absent).
    expect(await redis.hgetall(f.recordKey(viaRedis))).toEqual({
      reserved_micros: '30000', api_key_id: f.apiKeyId, reserved_at: '7', tenant_counted_micros: '30000', tenant_warmup_id: warmupId,
    });
    // A fallback admission gets a record, so a later Redis admission retry of it is a duplicate of the same amount.
    expect(await redis.hgetall(f.recordKey(viaFallback))).toEqual({ reserved_micros: '20000', tenant_counted_micros: '20000', tenant_warmup_id: warmupId });
    expect(await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: viaFallback, amountMicros: 20_000, nowMs: 8 })).toMatchObject({ status: 'duplicate', reservedMicros: 20_000 });
    // The settled request is no reservation: its cost only.
    expect(await redis.hgetall(f.recordKey(settled))).toEqual({ tenant_counted_micros: '1500', tenant_warmup_id: warmupId });
    for (const requestId of [viaRedis, viaFallback, settled]) {
      expect(await redis.ttl(f.recordKey(requestId))).toBeGreaterThan(TTL_SECONDS - 5);
    }
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('51500');
  });

  it('M2.2 the key warm-up writes key markers, separate from the tenant ones', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: 80_000 });
    const requestId = f.requestId();
    await redis.del(f.budgetKey);
    expect(await f.scripts.warmKey(f.tenantId, f.apiKeyId, { budgetMicros: 80_000, spentMicros: 9_000 }, { pending: [{ requestId, reservedMicros: 9_000 }] })).toBe(true);
    expect(await redis.hgetall(f.recordKey(requestId))).toEqual({
      reserved_micros: '9000', key_counted_micros: '9000', key_warmup_id: await redis.hget(f.budgetKey, 'warmup_id'),
    });
  });

  it('M2.2 a second warm-up does not overwrite a live counter moved by admissions, and marks no record', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: null });
    await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: f.requestId(), amountMicros: 300_000, nowMs: 1 });
    const late = f.requestId();
    // A stale snapshot from the database (used 0) arrives late.
    expect(await f.scripts.warmTenant(f.tenantId, { limitMicros: 1_000_000, usedMicros: 0 }, { pending: [{ requestId: late, reservedMicros: 5 }] })).toBe(false);
    expect(await f.scripts.warmKey(f.tenantId, f.apiKeyId, { budgetMicros: 5, spentMicros: 0 }, { settled: { requestId: late, costMicros: 5 } })).toBe(false);
    expect(await redis.hgetall(f.quotaKey)).toMatchObject({ limit_micros: '1000000', used_micros: '300000' });
    expect(await redis.hgetall(f.budgetKey)).toMatchObject({ budget_micros: '-1', spent_micros: '300000' });
    expect(await redis.exists(f.recordKey(late))).toBe(0);
  });

  it('M2.2 50 concurrent warm-ups on separate connections: exactly one wins, its values and only its marks stay', async () => {
    const clients = await Promise.all(Array.from({ length: 10 }, () => testRedis()));
    try {
      const tenantId = uniqueId('tenant');
      const runners = clients.map(newScripts);
      const requestIds = Array.from({ length: 50 }, (_, i) => `${tenantId}-r${i}`);
      const outcomes = await Promise.all(
        requestIds.map((requestId, i) =>
          runners[i % runners.length]!.warmTenant(tenantId, { limitMicros: 1_000 + i, usedMicros: i }, { pending: [{ requestId, reservedMicros: i }] }),
        ),
      );
      const winners = outcomes.flatMap((created, i) => (created ? [i] : []));
      expect(winners).toHaveLength(1);
      const winner = winners[0]!;
      const hash = await redis.hgetall(CacheKeys.tenantQuota(tenantId));
      expect(hash).toEqual({ limit_micros: String(1_000 + winner), used_micros: String(winner), warmup_id: expect.stringMatching(UUID), version: expect.stringMatching(/^[1-9][0-9]{15}$/) });
      const marked = [];
      for (const requestId of requestIds) if ((await redis.exists(CacheKeys.request(tenantId, requestId))) === 1) marked.push(requestId);
      expect(marked).toEqual([requestIds[winner]]);
      expect(await redis.hget(CacheKeys.request(tenantId, requestIds[winner]!), 'tenant_warmup_id')).toBe(hash.warmup_id);
    } finally {
      await Promise.all(clients.map((c) => c.quit()));
    }
  });

  it('M1.2 rejects a bad kind, id, amount, role or argument count and writes nothing, not even the hash', async () => {
    const tenantId = uniqueId('tenant');
    const key = CacheKeys.tenantQuota(tenantId);
    const record = CacheKeys.request(tenantId, 'r1');
    const warm = (keys: string[], argv: string[]) => rawEval(redis, QuotaScriptName.cacheWarmup, keys, argv);
    const create = ['create', '', '0'];
    await expect(warm([key], ['tenant', 'w', '60', '1', '0'])).rejects.toThrow(/^ERR cache_warmup expects 8 arguments for 0 records, got 5/);
    await expect(warm([key, record], ['tenant', 'w', '60', '1', '0', ...create])).rejects.toThrow(/^ERR cache_warmup expects 10 arguments for 1 records, got 8/);
    await expect(warm([key], ['quota', 'w', '60', '1', '0', ...create])).rejects.toThrow(/^ERR kind must be 'tenant' or 'key', got quota/);
    await expect(warm([key], ['tenant', '', '60', '1', '0', ...create])).rejects.toThrow(/^ERR warmup_id must not be empty/);
    await expect(warm([key], ['tenant', 'w', '60', '-1', '0', ...create])).rejects.toThrow(/^ERR limit_micros must be >= 0/);
    await expect(warm([key], ['tenant', 'w', '60', '1', '1.5', ...create])).rejects.toThrow(/^ERR used_micros must be a canonical integer/);
    await expect(warm([key], ['tenant', 'w', '60', '1', '0', 'upsert', '', '0'])).rejects.toThrow(/^ERR mode must be 'create' or 'replace', got upsert/);
    await expect(warm([key], ['tenant', 'w', '60', '1', '0', 'replace', '', '-1'])).rejects.toThrow(/^ERR expected_version must not be negative/);
    // The record's amount is only checked after the hash fields: a failure there must still write nothing.
    await expect(warm([key, record], ['tenant', 'w', '60', '1', '0', ...create, 'pending', '-3'])).rejects.toThrow(/^ERR counted_micros must not be negative/);
    await expect(warm([key, record], ['tenant', 'w', '60', '1', '0', ...create, 'reserved', '3'])).rejects.toThrow(/^ERR record role must be 'pending' or 'settled', got reserved/);
    expect(await redis.exists(key, record)).toBe(0);
    // -1 is an unlimited key budget, not a tenant limit.
    expect(await warm([CacheKeys.apiKeyBudget(tenantId, 'k')], ['key', 'w', '60', '-1', '0', ...create])).toBe(1);
  });

  it('M2.2 the typed warm-up refuses non-integer or negative amounts before calling Redis', async () => {
    const scripts = newScripts(redis);
    const tenantId = uniqueId('tenant');
    await expect(scripts.warmTenant(tenantId, { limitMicros: 1.5, usedMicros: 0 })).rejects.toThrow(InvalidMicrosError);
    await expect(scripts.warmTenant(tenantId, { limitMicros: -1, usedMicros: 0 })).rejects.toThrow(InvalidMicrosError);
    await expect(scripts.warmKey(tenantId, 'k', { budgetMicros: -1, spentMicros: 0 })).rejects.toThrow(InvalidMicrosError);
    await expect(scripts.warmTenant(tenantId, { limitMicros: 1, usedMicros: 0 }, { pending: [{ requestId: 'r', reservedMicros: -2 }] })).rejects.toThrow(InvalidMicrosError);
    await expect(scripts.warmTenant(tenantId, { limitMicros: 1, usedMicros: 0 }, { settled: { requestId: 'r', costMicros: 0.5 } })).rejects.toThrow(InvalidMicrosError);
    expect(await redis.exists(CacheKeys.tenantQuota(tenantId), CacheKeys.apiKeyBudget(tenantId, 'k'), CacheKeys.request(tenantId, 'r'))).toBe(0);
  });
});
