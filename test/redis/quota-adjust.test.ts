/**
 * quota_deduct.lua and apikey_budget_deduct.lua, "settle to cost", through the typed
 * runner (M3.2, M3.3, M10.1): the caller passes the final cost and each script applies
 * cost minus what ITS counter holds for the request, as the request record tells:
 * quota_check's reservation, a warm-up's mark, or nothing (PostgreSQL fallback).
 * Idempotency per request id, missing counters, malformed arguments.
 */
import type { Redis } from '../../src/redis/client';
import { QuotaScriptName } from '../../src/redis/scripts';
import { testRedis } from '../helpers/services';
import { counters, quotaFixture, rawEval, TTL_SECONDS, type QuotaFixture } from './quota-fixtures';

let redis: Redis;

beforeAll(async () => {
  redis = await testRedis();
});

afterAll(async () => {
  await redis.quit();
});

async function reserved(f: QuotaFixture, amountMicros: number): Promise<string> {
  const requestId = f.requestId();
  const result = await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, amountMicros, nowMs: 1 });
  expect(result.status).toBe('reserved');
  return requestId;
}

describe('quota_deduct.lua (M3.2 settle the tenant quota to cost)', () => {
  it('M3.2 a reservation made by quota_check is settled to a lower cost: the difference is refunded', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: null });
    const requestId = await reserved(f, 4_000_000);
    const result = await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 1_250_000 });
    expect(result).toEqual({ status: 'applied', deltaMicros: -2_750_000, usedMicros: 1_250_000, remainingMicros: 8_750_000 });
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('1250000');
    expect(await redis.hget(f.recordKey(requestId), 'tenant_adjusted')).toBe('-2750000');
    // The key budget is a separate settlement (M3.3): untouched here.
    expect(await redis.hget(f.budgetKey, 'spent_micros')).toBe('4000000');
  });

  it('M3.2 a cost above the reservation charges the overage past the limit and reports negative remaining', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: null });
    const requestId = await reserved(f, 1_000_000);
    const result = await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 1_000_250 });
    expect(result).toEqual({ status: 'applied', deltaMicros: 250, usedMicros: 1_000_250, remainingMicros: -250 });
  });

  it('M3.2 a void (cost 0) of a reservation the counter holds refunds it in full', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, usedMicros: 700, budgetMicros: null });
    const requestId = await reserved(f, 3_000_000);
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 0 })).toEqual({
      status: 'applied', deltaMicros: -3_000_000, usedMicros: 700, remainingMicros: 9_999_300,
    });
  });

  it('M3.2 M12 applies once per request id: a retry is a duplicate returning the first delta, whatever cost it carries', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: null });
    const requestId = await reserved(f, 3_000_000);
    await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 2_000_000 });
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 2_000_000 })).toEqual({ status: 'duplicate', deltaMicros: -1_000_000 });
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 5 })).toEqual({ status: 'duplicate', deltaMicros: -1_000_000 });
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 0, afterWarmup: true })).toEqual({ status: 'duplicate', deltaMicros: -1_000_000 });
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('2000000');
  });

  it('M2.3 M3.2 a fallback admission the live counter never counted is charged its full cost; the record is created with the marker', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, usedMicros: 500, budgetMicros: null });
    const requestId = f.requestId();
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 100 })).toEqual({
      status: 'applied', deltaMicros: 100, usedMicros: 600, remainingMicros: 9_999_400,
    });
    expect(await redis.hgetall(f.recordKey(requestId))).toEqual({ tenant_adjusted: '100', cost_micros: '100' });
    expect(await redis.ttl(f.recordKey(requestId))).toBeGreaterThan(TTL_SECONDS - 5);
    // A late admission retry with that request id must not reserve on top of the fallback's charge.
    const late = await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, amountMicros: 1_000, nowMs: 1 });
    expect(late).toEqual({ status: 'duplicate', reservedMicros: 0, tenantRemainingMicros: 9_999_400, keyRemainingMicros: null });
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('600');
  });

  it('M2.3 M3.2 a void of a fallback admission the counter never counted moves nothing (delta 0)', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, usedMicros: 500, budgetMicros: null });
    const requestId = f.requestId();
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 0 })).toEqual({
      status: 'applied', deltaMicros: 0, usedMicros: 500, remainingMicros: 9_999_500,
    });
    expect(await redis.hgetall(f.recordKey(requestId))).toEqual({ tenant_adjusted: '0', cost_micros: '0' });
  });

  it('M2.2 M3.2 a fallback reservation counted by a later warm-up is settled against it (cost - reservation)', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: null });
    const requestId = f.requestId();
    // Redis lost the tenant hash; the warm-up rebuilds used from the ledger: 4,000 committed + this pending 10,000.
    await redis.del(f.quotaKey);
    expect(await f.scripts.warmTenant(f.tenantId, { limitMicros: 10_000_000, usedMicros: 14_000 }, { pending: [{ requestId, reservedMicros: 10_000 }] })).toBe(true);
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 213 })).toEqual({
      status: 'applied', deltaMicros: 213 - 10_000, usedMicros: 4_213, remainingMicros: 9_995_787,
    });
  });

  it('M3.2 tenant_missing changes nothing and does not mark the record; after a warm-up that counted it pending, the retry applies cost - reservation', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: null });
    const requestId = await reserved(f, 3_000_000);
    await redis.del(f.quotaKey);
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 1 })).toEqual({ status: 'tenant_missing' });
    expect(await redis.exists(f.quotaKey)).toBe(0);
    expect(await redis.hexists(f.recordKey(requestId), 'tenant_adjusted')).toBe(0);
    // A concurrent warm-up whose ledger snapshot predates this request's commit: it counted the reservation.
    await f.scripts.warmTenant(f.tenantId, { limitMicros: 10_000_000, usedMicros: 3_000_000 }, { pending: [{ requestId, reservedMicros: 3_000_000 }] });
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 1, afterWarmup: true })).toEqual({
      status: 'applied', deltaMicros: -2_999_999, usedMicros: 1, remainingMicros: 9_999_999,
    });
  });

  it('M3.2 afterWarmup: a counter rebuilt after the ledger settled the request already holds the cost (quota_check\'s reservation is stale): delta 0', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: null });
    const requestId = await reserved(f, 3_000_000);
    await redis.del(f.quotaKey);
    // Rebuilt by another request's warm-up from a snapshot where this request is committed at 1,234.
    await f.scripts.warmTenant(f.tenantId, { limitMicros: 10_000_000, usedMicros: 1_234 });
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 1_234, afterWarmup: true })).toEqual({
      status: 'applied', deltaMicros: 0, usedMicros: 1_234, remainingMicros: 9_998_766,
    });
    expect(await redis.hget(f.recordKey(requestId), 'tenant_adjusted')).toBe('0');
  });

  it('M3.2 a warm-up run by the settlement marks the settled cost, so even a retry without afterWarmup applies 0', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: null });
    const requestId = await reserved(f, 3_000_000);
    await redis.del(f.quotaKey);
    await f.scripts.warmTenant(f.tenantId, { limitMicros: 10_000_000, usedMicros: 1_234 }, { settled: { requestId, costMicros: 1_234 } });
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 1_234 })).toEqual({
      status: 'applied', deltaMicros: 0, usedMicros: 1_234, remainingMicros: 9_998_766,
    });
  });

  it('M3.2 a mark left by an EARLIER warm-up (the hash was rebuilt again since, without this request pending) means the counter holds the cost: delta 0', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: null });
    const requestId = f.requestId();
    await redis.del(f.quotaKey);
    await f.scripts.warmTenant(f.tenantId, { limitMicros: 10_000_000, usedMicros: 10_000 }, { pending: [{ requestId, reservedMicros: 10_000 }] });
    await redis.del(f.quotaKey);
    await f.scripts.warmTenant(f.tenantId, { limitMicros: 10_000_000, usedMicros: 213 });
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 213 })).toEqual({
      status: 'applied', deltaMicros: 0, usedMicros: 213, remainingMicros: 9_999_787,
    });
  });

  it('M1.2 rejects a malformed or negative cost, a bad afterWarmup flag or ttl, and changes nothing', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000, budgetMicros: null });
    const requestId = f.requestId();
    const keys = [f.quotaKey, f.recordKey(requestId)];
    await expect(rawEval(redis, QuotaScriptName.quotaDeduct, keys, ['1.5', '60', '0'])).rejects.toThrow(/^ERR cost_micros must be a canonical integer/);
    await expect(rawEval(redis, QuotaScriptName.quotaDeduct, keys, ['-0', '60', '0'])).rejects.toThrow(/^ERR cost_micros must be a canonical integer/);
    await expect(rawEval(redis, QuotaScriptName.quotaDeduct, keys, ['-5', '60', '0'])).rejects.toThrow(/^ERR cost_micros must not be negative/);
    await expect(rawEval(redis, QuotaScriptName.quotaDeduct, keys, ['5', '-60', '0'])).rejects.toThrow(/^ERR ttl_seconds must be positive/);
    await expect(rawEval(redis, QuotaScriptName.quotaDeduct, keys, ['5', '60', 'yes'])).rejects.toThrow(/^ERR after_warmup must be '0' or '1', got yes/);
    await expect(rawEval(redis, QuotaScriptName.quotaDeduct, keys, ['5', '60'])).rejects.toThrow(/^ERR quota_deduct expects 3 arguments, got 2/);
    await expect(f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: -1 })).rejects.toThrow('costMicros must be >= 0, got -1');
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('0');
    expect(await redis.exists(f.recordKey(requestId))).toBe(0);
  });

  it('M1.2 refuses a corrupt reservation in the record instead of guessing, and changes nothing', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000, budgetMicros: null });
    const requestId = f.requestId();
    await redis.hset(f.recordKey(requestId), 'reserved_micros', '12.5', 'api_key_id', f.apiKeyId);
    await expect(f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 5 })).rejects.toThrow(/ERR corrupt request record/);
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('0');
    expect(await redis.hexists(f.recordKey(requestId), 'tenant_adjusted')).toBe(0);
  });
});

describe('apikey_budget_deduct.lua (M3.3 settle the key budget to cost)', () => {
  it('M3.3 settles the key budget down and up, independently of the tenant', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: 5_000_000 });
    const refunded = await reserved(f, 2_000_000);
    const charged = await reserved(f, 1_000_000);
    expect(await f.scripts.settleKeyBudget({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: refunded, costMicros: 500_000 })).toEqual({
      status: 'applied', deltaMicros: -1_500_000, spentMicros: 1_500_000, remainingMicros: 3_500_000,
    });
    expect(await f.scripts.settleKeyBudget({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: charged, costMicros: 5_000_000 })).toEqual({
      status: 'applied', deltaMicros: 4_000_000, spentMicros: 5_500_000, remainingMicros: -500_000,
    });
    expect(await counters(redis, f)).toEqual({
      quota: { limit_micros: '10000000', used_micros: '3000000' },
      budget: { budget_micros: '5000000', spent_micros: '5500000' },
    });
    expect(await redis.hget(f.recordKey(refunded), 'key_adjusted')).toBe('-1500000');
  });

  it('M3.3 M12 applies once per request id, and the tenant marker does not block the key settlement', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: null });
    const requestId = await reserved(f, 1_000_000);
    await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 600_000 });
    const args = { tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, costMicros: 600_000 };
    expect(await f.scripts.settleKeyBudget(args)).toEqual({ status: 'applied', deltaMicros: -400_000, spentMicros: 600_000, remainingMicros: null });
    expect(await f.scripts.settleKeyBudget(args)).toEqual({ status: 'duplicate', deltaMicros: -400_000 });
    expect(await f.scripts.settleKeyBudget({ ...args, costMicros: 7 })).toEqual({ status: 'duplicate', deltaMicros: -400_000 });
    expect(await counters(redis, f)).toEqual({
      quota: { limit_micros: '10000000', used_micros: '600000' },
      budget: { budget_micros: '-1', spent_micros: '600000' },
    });
    expect(await redis.hgetall(f.recordKey(requestId))).toEqual({
      reserved_micros: '1000000', api_key_id: f.apiKeyId, reserved_at: '1', tenant_adjusted: '-400000', key_adjusted: '-400000', cost_micros: '600000',
    });
  });

  it('M2.2 M3.3 separate markers: a tenant warm-up that counted a fallback reservation says nothing about the live key counter', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: 900_000, spentMicros: 50 });
    const requestId = f.requestId();
    await redis.del(f.quotaKey);
    await f.scripts.warmTenant(f.tenantId, { limitMicros: 10_000_000, usedMicros: 10_050 }, { pending: [{ requestId, reservedMicros: 10_000 }] });

    // The tenant counter holds the reservation, the key counter (never lost, admission bypassed it) does not.
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId, costMicros: 300 })).toEqual({
      status: 'applied', deltaMicros: -9_700, usedMicros: 350, remainingMicros: 9_999_650,
    });
    expect(await f.scripts.settleKeyBudget({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, costMicros: 300 })).toEqual({
      status: 'applied', deltaMicros: 300, spentMicros: 350, remainingMicros: 899_650,
    });
  });

  it('M2.2 M3.3 a key warm-up that counted the reservation pending is settled against it; a void refunds it in full', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: 900_000 });
    const requestId = f.requestId();
    await redis.del(f.budgetKey);
    await f.scripts.warmKey(f.tenantId, f.apiKeyId, { budgetMicros: 900_000, spentMicros: 10_500 }, { pending: [{ requestId, reservedMicros: 10_000 }] });
    expect(await f.scripts.settleKeyBudget({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, costMicros: 0 })).toEqual({
      status: 'applied', deltaMicros: -10_000, spentMicros: 500, remainingMicros: 899_500,
    });
  });

  it('M3.3 key_missing changes nothing and does not mark the record; afterWarmup without a mark then applies 0', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: 100 });
    const requestId = await reserved(f, 10);
    await redis.del(f.budgetKey);
    expect(await f.scripts.settleKeyBudget({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, costMicros: 4 })).toEqual({ status: 'key_missing' });
    expect(await redis.exists(f.budgetKey)).toBe(0);
    expect(await redis.hexists(f.recordKey(requestId), 'key_adjusted')).toBe(0);
    await f.scripts.warmKey(f.tenantId, f.apiKeyId, { budgetMicros: 100, spentMicros: 4 });
    expect(await f.scripts.settleKeyBudget({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, costMicros: 4, afterWarmup: true })).toEqual({
      status: 'applied', deltaMicros: 0, spentMicros: 4, remainingMicros: 96,
    });
  });

  it('M1.2 rejects a malformed cost and changes nothing', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000, budgetMicros: 1_000 });
    const requestId = f.requestId();
    const keys = [f.budgetKey, f.recordKey(requestId)];
    await expect(rawEval(redis, QuotaScriptName.apiKeyBudgetDeduct, keys, ['1,000', '60', '0'])).rejects.toThrow(/^ERR cost_micros must be a canonical integer/);
    await expect(rawEval(redis, QuotaScriptName.apiKeyBudgetDeduct, keys, ['9007199254740992', '60', '0'])).rejects.toThrow(/^ERR cost_micros is outside the safe integer range/);
    await expect(rawEval(redis, QuotaScriptName.apiKeyBudgetDeduct, keys, ['-1', '60', '0'])).rejects.toThrow(/^ERR cost_micros must not be negative/);
    await expect(rawEval(redis, QuotaScriptName.apiKeyBudgetDeduct, [f.budgetKey], ['1', '60', '0'])).rejects.toThrow(/^ERR apikey_budget_deduct expects 2 keys, got 1/);
    expect(await redis.hget(f.budgetKey, 'spent_micros')).toBe('0');
    expect(await redis.exists(f.recordKey(requestId))).toBe(0);
  });
});
