/**
 * The consistency check's Redis side (M4.3, M12): every script that moves a counter bumps
 * its `version`, and cache_warmup.lua's `replace` mode rebuilds a counter from a ledger
 * snapshot only over the exact counter the check confirmed (compare-and-set on warmup_id
 * and version), marking the records so the settlements that follow are exact.
 */
import type { Redis } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';
import { QuotaScriptName, type CounterToken } from '../../src/redis/scripts';
import { testRedis } from '../helpers/services';
import { quotaFixture, rawEval, type QuotaFixture } from './quota-fixtures';

let redis: Redis;

beforeAll(async () => {
  redis = await testRedis();
});

afterAll(async () => {
  await redis.quit();
});

async function token(key: string): Promise<CounterToken> {
  const [warmupId, version] = await redis.hmget(key, 'warmup_id', 'version');
  return { warmupId: warmupId ?? '', version: Number(version ?? '0') };
}

async function reserved(f: QuotaFixture, amountMicros: number): Promise<string> {
  const requestId = f.requestId();
  expect(await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, amountMicros, nowMs: 1 })).toMatchObject({ status: 'reserved' });
  return requestId;
}

describe('the counter version (the consistency check\'s token)', () => {
  it('M4.3 is bumped by every script that moves used, spent or the limit, and by nothing else', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: 500_000 });
    const versions = async () => [(await token(f.quotaKey)).version, (await token(f.budgetKey)).version];
    // Created by the warm-up at Redis TIME in microseconds, so a rebuilt counter never starts below its past.
    const [t0, k0] = await versions();
    expect(t0).toBeGreaterThan(Date.parse('2026-01-01') * 1000);
    expect(Math.abs(t0! - Date.now() * 1000)).toBeLessThan(60_000_000);
    const at = async (dt: number, dk: number) => expect(await versions()).toEqual([t0! + dt, k0! + dk]);

    const requestId = await reserved(f, 10_000);
    await at(1, 1);
    // A duplicate admission, a denial and a missing counter change nothing.
    await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, amountMicros: 10_000, nowMs: 2 });
    expect(await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: f.requestId(), amountMicros: 2_000_000, nowMs: 2 })).toMatchObject({ status: 'insufficient_quota' });
    await at(1, 1);

    await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 4_000 });
    await at(2, 1);
    await f.scripts.settleKeyBudget({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, costMicros: 4_000 });
    await at(2, 2);
    await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 4_000 }); // duplicate
    await at(2, 2);

    const released = await reserved(f, 1_000);
    expect(await f.scripts.release({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: released })).toMatchObject({ status: 'released' });
    await at(4, 4);

    expect(await f.scripts.raiseTenantLimit(f.tenantId, 2_000_000)).toMatchObject({ status: 'raised' });
    expect(await f.scripts.raiseTenantLimit(f.tenantId, 2_000_000)).toMatchObject({ status: 'kept' });
    await at(5, 4);
  });

  it('M4.3 a counter lost and rebuilt starts above every version it had (the syncs never write an older one)', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: null });
    for (let i = 0; i < 5; i++) await reserved(f, 1_000);
    const before = (await token(f.quotaKey)).version;
    await redis.del(f.quotaKey);
    await f.scripts.warmTenant(f.tenantId, { limitMicros: 1_000_000, usedMicros: 5_000 });
    expect((await token(f.quotaKey)).version).toBeGreaterThan(before);
  });

  it('M4.3 settlement stores the final cost in the request record, next to its adjustment marker', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: null });
    const requestId = await reserved(f, 10_000);
    await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 2_500 });
    expect(await redis.hmget(f.recordKey(requestId), 'tenant_adjusted', 'cost_micros')).toEqual(['-7500', '2500']);
  });
});

describe('cache_warmup.lua replace mode (the heal)', () => {
  it('M4.3 overwrites a drifted counter that did not move, with a new warmup_id and version + 1, marking the records', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: null });
    const open = await reserved(f, 30_000);
    await redis.hincrby(f.quotaKey, 'used_micros', 777); // the drift (no script: the version stays)
    const seen = await token(f.quotaKey);

    // Snapshot: 30,000 pending (open) + 1,200 committed by `done`, whose Redis settlement has not run yet.
    const done = await reserved(f, 5_000);
    const afterDone = await token(f.quotaKey);
    const written = await f.scripts.replaceTenant(f.tenantId, { limitMicros: 1_000_000, usedMicros: 31_200 }, {
      pending: [{ requestId: open, reservedMicros: 30_000 }],
      recentlySettled: [{ requestId: done, costMicros: 1_200 }],
    }, afterDone);
    expect(afterDone.version).toBe(seen.version + 1);
    expect(written).toBe(true);
    const hash = await redis.hgetall(f.quotaKey);
    expect(hash).toEqual({ limit_micros: '1000000', used_micros: '31200', warmup_id: expect.any(String), version: expect.any(String) });
    expect(Number(hash.version)).toBeGreaterThan(afterDone.version);
    expect(hash.warmup_id).not.toBe(afterDone.warmupId);

    // Both settlements now run against what the rebuilt counter holds: exact.
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId: done, costMicros: 1_200 })).toMatchObject({ status: 'applied', deltaMicros: 0 });
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId: open, costMicros: 9_000 })).toMatchObject({ status: 'applied', deltaMicros: -21_000, usedMicros: 10_200 });
  });

  it('M4.3 leaves a counter that moved since it was read alone (compare-and-set), and marks nothing', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: null });
    const seen = await token(f.quotaKey);
    const moved = await reserved(f, 4_000);
    const stale = f.requestId();
    expect(await f.scripts.replaceTenant(f.tenantId, { limitMicros: 1_000_000, usedMicros: 0 }, { pending: [{ requestId: stale, reservedMicros: 1 }] }, seen)).toBe(false);
    expect(await redis.hmget(f.quotaKey, 'used_micros', 'version')).toEqual(['4000', String(seen.version + 1)]);
    expect(await redis.exists(f.recordKey(stale))).toBe(0);
    expect(await redis.hget(f.recordKey(moved), 'tenant_warmup_id')).toBeNull();

    // Another build in between (a new warmup_id) is a move too.
    const other = await quotaFixture(redis, { limitMicros: 10, budgetMicros: null });
    const before = await token(other.quotaKey);
    await redis.del(other.quotaKey);
    await other.scripts.warmTenant(other.tenantId, { limitMicros: 10, usedMicros: 3 });
    expect((await token(other.quotaKey)).warmupId).not.toBe(before.warmupId);
    expect(await other.scripts.replaceTenant(other.tenantId, { limitMicros: 10, usedMicros: 0 }, {}, before)).toBe(false);
    expect(await redis.hget(other.quotaKey, 'used_micros')).toBe('3');
  });

  it('M4.3 a hash that vanished before the heal is created from the snapshot, and a hand-made hash without token is replaceable', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: null });
    const seen = await token(f.budgetKey);
    await redis.del(f.budgetKey);
    expect(await f.scripts.replaceKey(f.tenantId, f.apiKeyId, { budgetMicros: null, spentMicros: 42 }, {}, seen)).toBe(true);
    expect(await redis.hmget(f.budgetKey, 'budget_micros', 'spent_micros')).toEqual(['-1', '42']);
    expect(Number(await redis.hget(f.budgetKey, 'version'))).toBeGreaterThan(seen.version);

    await redis.del(f.quotaKey);
    await redis.hset(f.quotaKey, { limit_micros: '5', used_micros: '99' });
    expect(await f.scripts.replaceTenant(f.tenantId, { limitMicros: 5, usedMicros: 0 }, {}, { warmupId: '', version: 0 })).toBe(true);
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('0');
    expect(Number(await redis.hget(f.quotaKey, 'version'))).toBeGreaterThan(0);
  });

  it('M4.3 a snapshot that still shows a request pending which Redis already settled counts its cost, not the reservation', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: null });
    const requestId = await reserved(f, 50_000);
    // Settled in Redis (after a ledger commit the snapshot below predates).
    await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 8_000 });
    await f.scripts.settleKeyBudget({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, costMicros: 8_000 });
    const seen = await token(f.quotaKey);
    // Snapshot: 100 committed elsewhere + the request still pending at 50,000.
    expect(await f.scripts.replaceTenant(f.tenantId, { limitMicros: 1_000_000, usedMicros: 50_100 }, { pending: [{ requestId, reservedMicros: 50_000 }] }, seen)).toBe(true);
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('8100');
    expect(await redis.hmget(f.recordKey(requestId), 'tenant_counted_micros', 'tenant_warmup_id')).toEqual(['8000', await redis.hget(f.quotaKey, 'warmup_id')]);
    // The create mode (a warm-up of a missing counter) does the same.
    await redis.del(f.budgetKey);
    expect(await f.scripts.warmKey(f.tenantId, f.apiKeyId, { budgetMicros: null, spentMicros: 50_000 }, { pending: [{ requestId, reservedMicros: 50_000 }] })).toBe(true);
    expect(await redis.hget(f.budgetKey, 'spent_micros')).toBe('8000');
    // Settlement retries stay duplicates.
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 8_000 })).toEqual({ status: 'duplicate', deltaMicros: -42_000 });
  });

  it('M1.2 refuses a corrupt cost_micros in a listed record and writes nothing', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: null });
    const requestId = f.requestId();
    await redis.hset(f.recordKey(requestId), { tenant_adjusted: '0', cost_micros: '1.5' });
    const before = await redis.hgetall(f.quotaKey);
    const argv = ['tenant', 'w-corrupt', '60', '1000000', '0', 'replace', before.warmup_id!, before.version!, 'pending', '10'];
    await expect(rawEval(redis, QuotaScriptName.cacheWarmup, [f.quotaKey, CacheKeys.request(f.tenantId, requestId)], argv)).rejects.toThrow(/^ERR corrupt request record .*cost_micros must be a canonical integer/);
    expect(await redis.hgetall(f.quotaKey)).toEqual(before);
    expect(await redis.hget(f.recordKey(requestId), 'tenant_warmup_id')).toBeNull();
  });
});
