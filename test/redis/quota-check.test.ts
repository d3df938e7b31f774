/**
 * quota_check.lua through the typed runner, on a real Redis (M1.2, M2.1, M10.1):
 * reserve, deny at the tenant limit and at the key budget, the exact boundary,
 * unlimited keys, idempotency per request id, missing counters, malformed ARGV.
 */
import type { Redis } from '../../src/redis/client';
import { InvalidMicrosError, QuotaScriptName, QuotaScriptRejectedError } from '../../src/redis/scripts';
import { testRedis } from '../helpers/services';
import { counters, quotaFixture, rawEval, TTL_SECONDS } from './quota-fixtures';

let redis: Redis;

beforeAll(async () => {
  redis = await testRedis();
});

afterAll(async () => {
  await redis.quit();
});

const NOW_MS = 1_700_000_000_000;

describe('quota_check.lua (M2.1 atomic check and reserve)', () => {
  it('M2.1 reserves against tenant and key, writes the request record with its expiry', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, usedMicros: 1_000_000, budgetMicros: 5_000_000, spentMicros: 500_000 });
    const requestId = f.requestId();
    const result = await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, amountMicros: 2_500_000, nowMs: NOW_MS });
    expect(result).toEqual({ status: 'reserved', reservedMicros: 2_500_000, tenantRemainingMicros: 6_500_000, keyRemainingMicros: 2_000_000 });
    expect(await counters(redis, f)).toEqual({
      quota: { limit_micros: '10000000', used_micros: '3500000' },
      budget: { budget_micros: '5000000', spent_micros: '3000000' },
    });
    expect(await redis.hgetall(f.recordKey(requestId))).toEqual({
      reserved_micros: '2500000',
      api_key_id: f.apiKeyId,
      reserved_at: String(NOW_MS),
    });
    const ttl = await redis.ttl(f.recordKey(requestId));
    expect(ttl).toBeGreaterThan(TTL_SECONDS - 5);
    expect(ttl).toBeLessThanOrEqual(TTL_SECONDS);
  });

  it('M2.1 denies at the tenant limit with insufficient_quota and changes nothing', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, usedMicros: 900_000, budgetMicros: null });
    const requestId = f.requestId();
    const result = await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, amountMicros: 100_001, nowMs: NOW_MS });
    expect(result).toEqual({ status: 'insufficient_quota', tenantRemainingMicros: 100_000, keyRemainingMicros: null });
    expect(await counters(redis, f)).toEqual({
      quota: { limit_micros: '1000000', used_micros: '900000' },
      budget: { budget_micros: '-1', spent_micros: '0' },
    });
    expect(await redis.exists(f.recordKey(requestId))).toBe(0);
  });

  it('M2.1 denies at the key budget with budget_exceeded while the tenant still has room, and changes nothing', async () => {
    const f = await quotaFixture(redis, { limitMicros: 50_000_000, budgetMicros: 2_000_000, spentMicros: 1_500_000 });
    const requestId = f.requestId();
    const result = await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, amountMicros: 500_001, nowMs: NOW_MS });
    expect(result).toEqual({ status: 'budget_exceeded', tenantRemainingMicros: 50_000_000, keyRemainingMicros: 500_000 });
    expect(await counters(redis, f)).toEqual({
      quota: { limit_micros: '50000000', used_micros: '0' },
      budget: { budget_micros: '2000000', spent_micros: '1500000' },
    });
    expect(await redis.exists(f.recordKey(requestId))).toBe(0);
  });

  it('M2.1 the tenant limit is checked before the key budget when both would deny', async () => {
    const f = await quotaFixture(redis, { limitMicros: 100, budgetMicros: 50 });
    const result = await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: f.requestId(), amountMicros: 101, nowMs: NOW_MS });
    expect(result).toEqual({ status: 'insufficient_quota', tenantRemainingMicros: 100, keyRemainingMicros: 50 });
  });

  it('M2.1 admits the exact boundary: used + amount == limit and spent + amount == budget', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, usedMicros: 400_000, budgetMicros: 700_000, spentMicros: 100_000 });
    const first = await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: f.requestId(), amountMicros: 600_000, nowMs: NOW_MS });
    expect(first).toEqual({ status: 'reserved', reservedMicros: 600_000, tenantRemainingMicros: 0, keyRemainingMicros: 0 });
    const oneMore = await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: f.requestId(), amountMicros: 1, nowMs: NOW_MS });
    expect(oneMore).toEqual({ status: 'insufficient_quota', tenantRemainingMicros: 0, keyRemainingMicros: 0 });
    // A zero-cost reservation still fits a full quota.
    const zero = await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: f.requestId(), amountMicros: 0, nowMs: NOW_MS });
    expect(zero).toEqual({ status: 'reserved', reservedMicros: 0, tenantRemainingMicros: 0, keyRemainingMicros: 0 });
    expect((await counters(redis, f)).quota.used_micros).toBe('1000000');
  });

  it('M2.1 an unlimited key (-1) is never the reason for a denial and reports null remaining', async () => {
    const f = await quotaFixture(redis, { limitMicros: 9_000_000_000, budgetMicros: null, spentMicros: 123 });
    const result = await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: f.requestId(), amountMicros: 8_000_000_000, nowMs: NOW_MS });
    expect(result).toEqual({ status: 'reserved', reservedMicros: 8_000_000_000, tenantRemainingMicros: 1_000_000_000, keyRemainingMicros: null });
    expect((await counters(redis, f)).budget).toEqual({ budget_micros: '-1', spent_micros: '8000000123' });
  });

  it('M2.1 M12 a repeated request id is a duplicate: no second deduction, the ORIGINAL amount is returned', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: 8_000_000 });
    const requestId = f.requestId();
    const base = { tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, nowMs: NOW_MS };
    expect(await f.scripts.reserve({ ...base, amountMicros: 3_000_000 })).toEqual({
      status: 'reserved', reservedMicros: 3_000_000, tenantRemainingMicros: 7_000_000, keyRemainingMicros: 5_000_000,
    });
    // A retry with a different estimate (e.g. a re-tokenised prompt) must not reserve again.
    const retry = await f.scripts.reserve({ ...base, amountMicros: 4_000_000, nowMs: NOW_MS + 5_000 });
    expect(retry).toEqual({ status: 'duplicate', reservedMicros: 3_000_000, tenantRemainingMicros: 7_000_000, keyRemainingMicros: 5_000_000 });
    // Even a retry that would now be denied is still the admitted duplicate.
    const tooBig = await f.scripts.reserve({ ...base, amountMicros: 99_000_000 });
    expect(tooBig).toEqual({ status: 'duplicate', reservedMicros: 3_000_000, tenantRemainingMicros: 7_000_000, keyRemainingMicros: 5_000_000 });
    expect(await counters(redis, f)).toEqual({
      quota: { limit_micros: '10000000', used_micros: '3000000' },
      budget: { budget_micros: '8000000', spent_micros: '3000000' },
    });
    expect(await redis.hgetall(f.recordKey(requestId))).toEqual({ reserved_micros: '3000000', api_key_id: f.apiKeyId, reserved_at: String(NOW_MS) });
  });

  it('M2.2 reports tenant_missing, then key_missing, changing nothing, and reserves once both are warmed', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: null });
    await redis.del(f.quotaKey, f.budgetKey);
    const args = { tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: f.requestId(), amountMicros: 10, nowMs: NOW_MS };
    expect(await f.scripts.reserve(args)).toEqual({ status: 'tenant_missing' });
    expect(await redis.exists(f.quotaKey, f.budgetKey, f.recordKey(args.requestId))).toBe(0);
    await f.scripts.warmTenant(f.tenantId, { limitMicros: 1_000_000, usedMicros: 0 });
    expect(await f.scripts.reserve(args)).toEqual({ status: 'key_missing' });
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('0');
    expect(await redis.exists(f.recordKey(args.requestId))).toBe(0);
    await f.scripts.warmKey(f.tenantId, f.apiKeyId, { budgetMicros: 100, spentMicros: 0 });
    expect(await f.scripts.reserve(args)).toEqual({ status: 'reserved', reservedMicros: 10, tenantRemainingMicros: 999_990, keyRemainingMicros: 90 });
  });

  it('M2.1 a settled overage (used > limit) reports 0 remaining, not a negative number', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000, usedMicros: 1_500, budgetMicros: 10, spentMicros: 20 });
    const result = await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: f.requestId(), amountMicros: 0, nowMs: NOW_MS });
    expect(result).toEqual({ status: 'insufficient_quota', tenantRemainingMicros: 0, keyRemainingMicros: 0 });
  });
});

describe('quota_check.lua rejects malformed ARGV (M1.2) and changes nothing', () => {
  const malformed: Array<[string, string[], RegExp]> = [
    ['a float amount', ['1.5', '60', 'k', '1'], /^ERR amount_micros must be a canonical integer/],
    ['a negative amount', ['-1', '60', 'k', '1'], /^ERR amount_micros must not be negative/],
    ['an exponent', ['1e6', '60', 'k', '1'], /^ERR amount_micros must be a canonical integer/],
    ['a leading zero', ['0100', '60', 'k', '1'], /^ERR amount_micros must be a canonical integer/],
    ['an amount past 2^53', ['9007199254740993', '60', 'k', '1'], /^ERR amount_micros is outside the safe integer range/],
    ['text', ['ten', '60', 'k', '1'], /^ERR amount_micros must be a canonical integer/],
    ['a zero ttl', ['10', '0', 'k', '1'], /^ERR ttl_seconds must be positive/],
    ['an empty api key id', ['10', '60', '', '1'], /^ERR api_key_id must not be empty/],
    ['a float now_ms', ['10', '60', 'k', '1.0'], /^ERR now_ms must be a canonical integer/],
    ['a missing argument', ['10', '60', 'k'], /^ERR quota_check expects 4 arguments, got 3/],
  ];

  it.each(malformed)('rejects %s with an error reply', async (_label, argv, message) => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: null });
    const requestId = f.requestId();
    await expect(rawEval(redis, QuotaScriptName.quotaCheck, [f.quotaKey, f.budgetKey, f.recordKey(requestId)], argv)).rejects.toThrow(message);
    expect(await counters(redis, f)).toEqual({ quota: { limit_micros: '1000000', used_micros: '0' }, budget: { budget_micros: '-1', spent_micros: '0' } });
    expect(await redis.exists(f.recordKey(requestId))).toBe(0);
  });

  it('refuses a corrupt counter before any write (a failed script is not rolled back)', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: 100 });
    await redis.hset(f.budgetKey, 'spent_micros', '1e3');
    const requestId = f.requestId();
    await expect(
      f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, amountMicros: 10, nowMs: NOW_MS }),
    ).rejects.toThrow(QuotaScriptRejectedError);
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('0');
    expect(await redis.exists(f.recordKey(requestId))).toBe(0);
  });

  it('the typed runner refuses non-integer money before calling Redis', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: null });
    const base = { tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: f.requestId(), nowMs: NOW_MS };
    await expect(f.scripts.reserve({ ...base, amountMicros: 0.5 })).rejects.toThrow(InvalidMicrosError);
    await expect(f.scripts.reserve({ ...base, amountMicros: -1 })).rejects.toThrow(InvalidMicrosError);
    await expect(f.scripts.reserve({ ...base, amountMicros: 2 ** 53 })).rejects.toThrow(InvalidMicrosError);
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('0');
  });
});
