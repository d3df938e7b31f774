/**
 * quota_deduct.lua and apikey_budget_deduct.lua through the typed runner (M3.2, M3.3,
 * M10.1): refunds and overage charges, idempotency per request id, missing counters,
 * records created for admissions that went through the PostgreSQL fallback.
 */
import type { Redis } from 'ioredis';
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

describe('quota_deduct.lua (M3.2 tenant cost difference)', () => {
  it('M3.2 refunds a negative difference and marks the record', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: null });
    const requestId = await reserved(f, 4_000_000);
    const result = await f.scripts.adjustTenant({ tenantId: f.tenantId, requestId, deltaMicros: -2_750_000 });
    expect(result).toEqual({ status: 'applied', deltaMicros: -2_750_000, usedMicros: 1_250_000, remainingMicros: 8_750_000 });
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('1250000');
    expect(await redis.hget(f.recordKey(requestId), 'tenant_adjusted')).toBe('-2750000');
    // The key budget is a separate adjustment (M3.3): untouched here.
    expect(await redis.hget(f.budgetKey, 'spent_micros')).toBe('4000000');
  });

  it('M3.2 charges a positive difference past the limit (settled overage) and reports negative remaining', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: null });
    const requestId = await reserved(f, 1_000_000);
    const result = await f.scripts.adjustTenant({ tenantId: f.tenantId, requestId, deltaMicros: 250 });
    expect(result).toEqual({ status: 'applied', deltaMicros: 250, usedMicros: 1_000_250, remainingMicros: -250 });
  });

  it('M3.2 M12 applies once per request id: a retry is a duplicate returning the first delta', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: null });
    const requestId = await reserved(f, 3_000_000);
    await f.scripts.adjustTenant({ tenantId: f.tenantId, requestId, deltaMicros: -1_000_000 });
    expect(await f.scripts.adjustTenant({ tenantId: f.tenantId, requestId, deltaMicros: -1_000_000 })).toEqual({ status: 'duplicate', deltaMicros: -1_000_000 });
    expect(await f.scripts.adjustTenant({ tenantId: f.tenantId, requestId, deltaMicros: 5 })).toEqual({ status: 'duplicate', deltaMicros: -1_000_000 });
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('2000000');
  });

  it('M3.2 tenant_missing changes nothing and does not mark the record, so a retry after warm-up applies', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: null });
    const requestId = await reserved(f, 3_000_000);
    await redis.del(f.quotaKey);
    expect(await f.scripts.adjustTenant({ tenantId: f.tenantId, requestId, deltaMicros: -1 })).toEqual({ status: 'tenant_missing' });
    expect(await redis.exists(f.quotaKey)).toBe(0);
    expect(await redis.hexists(f.recordKey(requestId), 'tenant_adjusted')).toBe(0);
    await f.scripts.warmTenant(f.tenantId, { limitMicros: 10_000_000, usedMicros: 3_000_000 });
    expect(await f.scripts.adjustTenant({ tenantId: f.tenantId, requestId, deltaMicros: -1 })).toEqual({
      status: 'applied', deltaMicros: -1, usedMicros: 2_999_999, remainingMicros: 7_000_001,
    });
  });

  it('M2.3 M3.2 creates the record with the marker when admission went through the database fallback', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, usedMicros: 500, budgetMicros: null });
    const requestId = f.requestId();
    expect(await f.scripts.adjustTenant({ tenantId: f.tenantId, requestId, deltaMicros: 100 })).toEqual({
      status: 'applied', deltaMicros: 100, usedMicros: 600, remainingMicros: 9_999_400,
    });
    expect(await redis.hgetall(f.recordKey(requestId))).toEqual({ tenant_adjusted: '100' });
    expect(await redis.ttl(f.recordKey(requestId))).toBeGreaterThan(TTL_SECONDS - 5);
    // A late admission retry with that request id must not reserve on top of the fallback's charge.
    const late = await f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, amountMicros: 1_000, nowMs: 1 });
    expect(late).toEqual({ status: 'duplicate', reservedMicros: 0, tenantRemainingMicros: 9_999_400, keyRemainingMicros: null });
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('600');
  });

  it('M1.2 rejects a malformed delta or ttl and changes nothing', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000, budgetMicros: null });
    const requestId = f.requestId();
    const keys = [f.quotaKey, f.recordKey(requestId)];
    await expect(rawEval(redis, QuotaScriptName.quotaDeduct, keys, ['-1.5', '60'])).rejects.toThrow(/^ERR delta_micros must be a canonical integer/);
    await expect(rawEval(redis, QuotaScriptName.quotaDeduct, keys, ['-0', '60'])).rejects.toThrow(/^ERR delta_micros must be a canonical integer/);
    await expect(rawEval(redis, QuotaScriptName.quotaDeduct, keys, ['5', '-60'])).rejects.toThrow(/^ERR ttl_seconds must be positive/);
    await expect(rawEval(redis, QuotaScriptName.quotaDeduct, keys, ['5'])).rejects.toThrow(/^ERR quota_deduct expects 2 arguments, got 1/);
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('0');
    expect(await redis.exists(f.recordKey(requestId))).toBe(0);
  });
});

describe('apikey_budget_deduct.lua (M3.3 key budget cost difference)', () => {
  it('M3.3 adjusts the key budget up and down, independently of the tenant', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: 5_000_000 });
    const refunded = await reserved(f, 2_000_000);
    const charged = await reserved(f, 1_000_000);
    expect(await f.scripts.adjustKeyBudget({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: refunded, deltaMicros: -1_500_000 })).toEqual({
      status: 'applied', deltaMicros: -1_500_000, spentMicros: 1_500_000, remainingMicros: 3_500_000,
    });
    expect(await f.scripts.adjustKeyBudget({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: charged, deltaMicros: 4_000_000 })).toEqual({
      status: 'applied', deltaMicros: 4_000_000, spentMicros: 5_500_000, remainingMicros: -500_000,
    });
    expect(await counters(redis, f)).toEqual({
      quota: { limit_micros: '10000000', used_micros: '3000000' },
      budget: { budget_micros: '5000000', spent_micros: '5500000' },
    });
    expect(await redis.hget(f.recordKey(refunded), 'key_adjusted')).toBe('-1500000');
  });

  it('M3.3 M12 applies once per request id, and the tenant marker does not block the key adjustment', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: null });
    const requestId = await reserved(f, 1_000_000);
    await f.scripts.adjustTenant({ tenantId: f.tenantId, requestId, deltaMicros: -400_000 });
    const args = { tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, deltaMicros: -400_000 };
    expect(await f.scripts.adjustKeyBudget(args)).toEqual({ status: 'applied', deltaMicros: -400_000, spentMicros: 600_000, remainingMicros: null });
    expect(await f.scripts.adjustKeyBudget(args)).toEqual({ status: 'duplicate', deltaMicros: -400_000 });
    expect(await f.scripts.adjustKeyBudget({ ...args, deltaMicros: 7 })).toEqual({ status: 'duplicate', deltaMicros: -400_000 });
    expect(await counters(redis, f)).toEqual({
      quota: { limit_micros: '10000000', used_micros: '600000' },
      budget: { budget_micros: '-1', spent_micros: '600000' },
    });
    expect(await redis.hgetall(f.recordKey(requestId))).toEqual({
      reserved_micros: '1000000', api_key_id: f.apiKeyId, reserved_at: '1', tenant_adjusted: '-400000', key_adjusted: '-400000',
    });
  });

  it('M3.3 key_missing changes nothing and does not mark the record', async () => {
    const f = await quotaFixture(redis, { limitMicros: 10_000_000, budgetMicros: 100 });
    const requestId = await reserved(f, 10);
    await redis.del(f.budgetKey);
    expect(await f.scripts.adjustKeyBudget({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, deltaMicros: -10 })).toEqual({ status: 'key_missing' });
    expect(await redis.exists(f.budgetKey)).toBe(0);
    expect(await redis.hexists(f.recordKey(requestId), 'key_adjusted')).toBe(0);
  });

  it('M1.2 rejects a malformed delta and changes nothing', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000, budgetMicros: 1_000 });
    const requestId = f.requestId();
    const keys = [f.budgetKey, f.recordKey(requestId)];
    await expect(rawEval(redis, QuotaScriptName.apiKeyBudgetDeduct, keys, ['1,000', '60'])).rejects.toThrow(/^ERR delta_micros must be a canonical integer/);
    await expect(rawEval(redis, QuotaScriptName.apiKeyBudgetDeduct, keys, ['-9007199254740992', '60'])).rejects.toThrow(/^ERR delta_micros is outside the safe integer range/);
    await expect(rawEval(redis, QuotaScriptName.apiKeyBudgetDeduct, [f.budgetKey], ['1', '60'])).rejects.toThrow(/^ERR apikey_budget_deduct expects 2 keys, got 1/);
    expect(await redis.hget(f.budgetKey, 'spent_micros')).toBe('0');
    expect(await redis.exists(f.recordKey(requestId))).toBe(0);
  });
});
