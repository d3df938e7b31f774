/**
 * The budget window scripts on the real Redis (issue 12): quota_check.lua with windows
 * (all or nothing, the record's markers, malformed ARGV refused before any write),
 * window_settle.lua (to cost on the windows given, once; a rebuilt or missing counter)
 * and window_warmup.lua (create-only, marks the pending records, expires after the window).
 */
import type { Redis } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';
import { QuotaScriptName } from '../../src/redis/scripts';
import { testRedis } from '../helpers/services';
import { quotaFixture, rawEval, type QuotaFixture } from './quota-fixtures';

let redis: Redis;
beforeAll(async () => {
  redis = await testRedis();
});
afterAll(() => redis.disconnect());

const HOUR = 3_600_000;

async function withWindows(f: QuotaFixture, used: number[]): Promise<string[]> {
  const ids = used.map((_, i) => `k:${f.apiKeyId}:daily:w${i}`);
  for (const [i, id] of ids.entries()) {
    expect(await f.scripts.warmWindow({ tenantId: f.tenantId, windowId: id, usedMicros: used[i]!, pending: [], expireAtMs: Date.now() + HOUR })).toBe(true);
  }
  return ids;
}

const usedOf = async (f: QuotaFixture, id: string): Promise<string | null> => redis.hget(CacheKeys.budgetWindow(f.tenantId, id), 'used_micros');

describe('quota_check.lua with windows', () => {
  it('reserves on the quota, the key and every window at once, or on none when one window is full', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000 });
    const [a, b] = await withWindows(f, [0, 60]);
    const args = { tenantId: f.tenantId, apiKeyId: f.apiKeyId, amountMicros: 40, nowMs: 1 };
    const windows = [{ windowId: a!, limitMicros: 100, subject: 'tenant' as const }, { windowId: b!, limitMicros: 100, subject: 'key' as const }];

    const first = f.requestId();
    expect(await f.scripts.reserveWithWindows({ ...args, requestId: first }, windows)).toMatchObject({ status: 'reserved', reservedMicros: 40 });
    expect([await usedOf(f, a!), await usedOf(f, b!)]).toEqual(['40', '100']);
    const record = await redis.hgetall(f.recordKey(first));
    expect(record[`wn:${CacheKeys.budgetWindow(f.tenantId, b!)}`]).toBe('40');
    expect(record[`wb:${CacheKeys.budgetWindow(f.tenantId, b!)}`]).toBe(await redis.hget(CacheKeys.budgetWindow(f.tenantId, b!), 'build'));

    const second = f.requestId();
    expect(await f.scripts.reserveWithWindows({ ...args, requestId: second }, windows)).toMatchObject({ status: 'budget_exceeded', windowIndex: 1 });
    expect([await usedOf(f, a!), await usedOf(f, b!), await redis.hget(f.quotaKey, 'used_micros'), await redis.exists(f.recordKey(second))]).toEqual(['40', '100', '40', 0]);
    // A replay of the first is a duplicate that moves nothing.
    expect(await f.scripts.reserveWithWindows({ ...args, requestId: first }, windows)).toMatchObject({ status: 'duplicate', reservedMicros: 40 });
    expect(await usedOf(f, a!)).toBe('40');
  });

  it('answers window_missing with the index of a window that is not cached, and changes nothing', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000 });
    const [a] = await withWindows(f, [0]);
    const requestId = f.requestId();
    const result = await f.scripts.reserveWithWindows({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, amountMicros: 5, nowMs: 1 }, [
      { windowId: a!, limitMicros: 100, subject: 'key' },
      { windowId: `k:${f.apiKeyId}:monthly:none`, limitMicros: 100, subject: 'key' },
    ]);
    expect(result).toEqual({ status: 'window_missing', windowIndex: 1 });
    expect([await usedOf(f, a!), await redis.hget(f.quotaKey, 'used_micros'), await redis.exists(f.recordKey(requestId))]).toEqual(['0', '0', 0]);
  });

  it.each([
    ['a window without its subject', ['5', '60', 'k', '1', '100'], /expects 6 arguments for 1 windows, got 5/],
    ['a fractional window limit', ['5', '60', 'k', '1', '1.5', 'key'], /window limit_micros/],
    ['an unknown subject', ['5', '60', 'k', '1', '100', 'team'], /window subject must be 'tenant' or 'key'/],
  ])('refuses %s before any write', async (_label, argv, message) => {
    const f = await quotaFixture(redis, { limitMicros: 1_000 });
    const [a] = await withWindows(f, [0]);
    const requestId = f.requestId();
    await expect(rawEval(redis, QuotaScriptName.quotaCheck, [f.quotaKey, f.budgetKey, f.recordKey(requestId), CacheKeys.budgetWindow(f.tenantId, a!)], argv)).rejects.toThrow(message);
    expect([await usedOf(f, a!), await redis.hget(f.quotaKey, 'used_micros'), await redis.exists(f.recordKey(requestId))]).toEqual(['0', '0', 0]);
  });
});

describe('window_settle.lua', () => {
  it('settles to cost once per window; a counter rebuilt since the reservation moves by 0; a missing one is skipped', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000 });
    const [a, b, c] = await withWindows(f, [0, 0, 0]);
    const requestId = f.requestId();
    await f.scripts.reserveWithWindows({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, amountMicros: 50, nowMs: 1 }, [a!, b!, c!].map((windowId) => ({ windowId, limitMicros: 100, subject: 'key' as const })));
    // b lost and rebuilt from a ledger that already holds the cost (12); c lost for good.
    await redis.del(CacheKeys.budgetWindow(f.tenantId, b!), CacheKeys.budgetWindow(f.tenantId, c!));
    await f.scripts.warmWindow({ tenantId: f.tenantId, windowId: b!, usedMicros: 12, pending: [], expireAtMs: Date.now() + HOUR });

    expect(await f.scripts.settleWindows({ tenantId: f.tenantId, requestId, windowIds: [a!, b!, c!], costMicros: 12 })).toEqual([-38, 0, 0]);
    expect([await usedOf(f, a!), await usedOf(f, b!), await usedOf(f, c!)]).toEqual(['12', '12', null]);
    // A replay answers the first deltas and moves nothing.
    expect(await f.scripts.settleWindows({ tenantId: f.tenantId, requestId, windowIds: [a!, b!, c!], costMicros: 99 })).toEqual([-38, 0, 0]);
    expect(await usedOf(f, a!)).toBe('12');
  });
});

describe('window_warmup.lua', () => {
  it('creates the counter only if missing, marks the pending records, and expires it at the time given', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000 });
    const id = `k:${f.apiKeyId}:daily:fresh`;
    const pending = f.requestId();
    const expireAtMs = Date.now() + HOUR;
    expect(await f.scripts.warmWindow({ tenantId: f.tenantId, windowId: id, usedMicros: 70, pending: [{ requestId: pending, reservedMicros: 30 }], expireAtMs })).toBe(true);
    expect(await f.scripts.warmWindow({ tenantId: f.tenantId, windowId: id, usedMicros: 0, pending: [], expireAtMs })).toBe(false);
    const key = CacheKeys.budgetWindow(f.tenantId, id);
    expect(await usedOf(f, id)).toBe('70');
    expect(await redis.hget(f.recordKey(pending), `wn:${key}`)).toBe('30');
    expect(await redis.hget(f.recordKey(pending), `wb:${key}`)).toBe(await redis.hget(key, 'build'));
    expect(Math.abs((await redis.pexpiretime(key)) - expireAtMs)).toBeLessThanOrEqual(1);
    // The pending request then settles by cost - 30 on the rebuilt counter.
    expect(await f.scripts.settleWindows({ tenantId: f.tenantId, requestId: pending, windowIds: [id], costMicros: 10 })).toEqual([-20]);
    expect(await usedOf(f, id)).toBe('50');
  });
});
