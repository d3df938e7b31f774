/**
 * Budget windows (issue 12) through the real QuotaCheckStep and BillingStep on the real
 * Redis and PostgreSQL, with an injected clock: boundaries are crossed by moving the
 * clock, requests in flight across them, several windows on one key, a window in
 * Asia/Tokyo, a lost window counter rebuilt from the ledger, and the PostgreSQL fallback.
 * Prices as in billing-step.test.ts: a request of 21 prompt tokens reserves 10,053 micros;
 * 21 in + 16 out costs 52.5 + 160 = 212.5 -> 213 micros.
 */
import type { Knex } from 'knex';
import { createBillingStep } from '../../src/activities/billing-step';
import { createQuotaCheckStep } from '../../src/activities/quota-check-step';
import { createBudgetWindowRepository, type BudgetWindowCap } from '../../src/db/budget-window-repository';
import { windowBounds } from '../../src/billing/budget-window-period';
import type { Redis } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';
import { budgetWindowId, createBudgetWindows } from '../../src/services/budget-windows';
import type { AdmissionDecision, BilledRequestInput, UpstreamOutcome } from '../../src/workflows/definitions';
import { testDb, testRedis } from '../helpers/services';
import { billedInput, cachedCounters, closeTenant, seedTenant, stepDeps, unreachableRedis, type StepDeps, type TenantSeed } from '../helpers/activity-deps';

let redis: Redis;
let db: Knex;
const seeds: TenantSeed[] = [];

beforeAll(async () => {
  redis = await testRedis();
  db = testDb();
});
afterAll(async () => {
  const deps = stepDeps(redis, db);
  for (const seed of seeds) await closeTenant(redis, deps.ledger, seed);
  await db.destroy();
  redis.disconnect();
});

const RESERVED = 10_053;
const COST = 213;
const COMPLETED: UpstreamOutcome = { status: 'completed', promptTokens: 21, completionTokens: 16, tokenSource: 'upstream', channel: 'default' };
const DAY = 86_400_000;
/**
 * The test clocks stay after the real one (window counters expire a day after their
 * window's end, by Redis' own clock): UTC midnight `days` days from now, and the `day`th
 * of next month at `time`.
 */
const midnightIn = (days: number): number => Math.floor(Date.now() / DAY) * DAY + days * DAY;
function nextMonth(day: number, time = '12:00:00.000Z'): number {
  const now = new Date();
  const first = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));
  return Date.parse(`${first.toISOString().slice(0, 8)}${String(day).padStart(2, '0')}T${time}`);
}

/** A tenant with one key and the given windows; nothing cached in Redis. */
async function tenantWithWindows(opts: { key?: BudgetWindowCap[]; tenant?: BudgetWindowCap[]; timeZone?: string }): Promise<TenantSeed> {
  const seed = await seedTenant(db, 10_000_000, [{ budgetMicros: null }]);
  seeds.push(seed);
  const repo = createBudgetWindowRepository(db);
  await db.transaction(async (trx) => {
    if (opts.tenant) await repo.replace(trx, 'tenant', seed.tenantId, seed.tenantId, { timeZone: opts.timeZone ?? 'UTC', caps: opts.tenant });
    if (opts.key) await repo.replace(trx, 'api_key', seed.apiKeyIds[0]!, seed.tenantId, { timeZone: opts.timeZone ?? 'UTC', caps: opts.key });
  });
  return seed;
}

/** The steps on the real stores, with a clock the test moves. */
function harness(clock: { now: number }, base: StepDeps = stepDeps(redis, db)) {
  const budgetWindows = createBudgetWindows({ repository: createBudgetWindowRepository(db), scripts: base.scripts, redis });
  const deps = { ...base, budgetWindows, now: () => clock.now };
  return { quotaCheck: createQuotaCheckStep(deps), billing: createBillingStep(deps), budgetWindows };
}

function request(seed: TenantSeed): BilledRequestInput {
  return billedInput(seed.tenantId, seed.apiKeyIds[0]!, { promptTokens: 21, reservedMicros: RESERVED });
}

async function windowUsed(seed: TenantSeed, windowId: string): Promise<number | null> {
  const raw = await redis.hget(CacheKeys.budgetWindow(seed.tenantId, windowId), 'used_micros');
  return raw === null ? null : Number(raw);
}

async function ledgerWindows(requestId: string): Promise<string[]> {
  const row = await db('billing_transaction').where('request_id', requestId).first<{ budget_windows: string[] }>('budget_windows');
  return row.budget_windows;
}

const ledgerWindowUsage = async (windowId: string): Promise<number> => (await createBudgetWindowRepository(db).windowUsageSnapshot(windowId)).usageMicros;

function admittedOrThrow(decision: AdmissionDecision): void {
  if (!decision.admitted) throw new Error(`expected an admission, got ${decision.reason}`);
}

describe('budget windows: turnover at the boundary with requests in flight', () => {
  it('a request reserved before midnight and settled after it counts in the old window; the new window starts at 0 and admits', async () => {
    // A daily cap of 2 reservations.
    const seed = await tenantWithWindows({ key: [{ period: 'daily', limitMicros: 2 * RESERVED }] });
    const midnight = midnightIn(2);
    const clock = { now: midnight - 1_000 };
    const steps = harness(clock);
    const oldWindow = budgetWindowId('api_key', seed.apiKeyIds[0]!, 'daily', midnight - DAY);
    const newWindow = budgetWindowId('api_key', seed.apiKeyIds[0]!, 'daily', midnight);

    const inFlight = request(seed);
    admittedOrThrow(await steps.quotaCheck(inFlight));
    const settledBefore = request(seed);
    admittedOrThrow(await steps.quotaCheck(settledBefore));
    await steps.billing(settledBefore, COMPLETED);
    // The old window holds one reservation and one cost: a third reservation does not fit.
    expect(await windowUsed(seed, oldWindow)).toBe(RESERVED + COST);
    expect(await steps.quotaCheck(request(seed))).toMatchObject({ admitted: false, reason: 'budget_exceeded' });

    clock.now = midnight; // the boundary itself
    const afterMidnight = request(seed);
    admittedOrThrow(await steps.quotaCheck(afterMidnight));
    expect(await windowUsed(seed, newWindow)).toBe(RESERVED);

    // The in-flight request settles after the boundary: into the window that reserved it.
    await steps.billing(inFlight, COMPLETED);
    expect(await ledgerWindows(inFlight.requestId)).toEqual([oldWindow]);
    expect(await ledgerWindows(afterMidnight.requestId)).toEqual([newWindow]);
    expect(await windowUsed(seed, oldWindow)).toBe(2 * COST);
    expect(await windowUsed(seed, newWindow)).toBe(RESERVED); // untouched by the old window's settlement
    await steps.billing(afterMidnight, COMPLETED);
    expect(await windowUsed(seed, newWindow)).toBe(COST);

    // Both windows recomputed from the ledger alone agree with the counters.
    expect(await ledgerWindowUsage(oldWindow)).toBe(2 * COST);
    expect(await ledgerWindowUsage(newWindow)).toBe(COST);
    // The lifetime counters are unaffected by windows: every cost, whichever window.
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 3 * COST, spent: 3 * COST });
  });

  it('a void after the boundary refunds the old window only', async () => {
    const seed = await tenantWithWindows({ key: [{ period: 'daily', limitMicros: 5 * RESERVED }] });
    const midnight = midnightIn(3);
    const clock = { now: midnight - 1 };
    const steps = harness(clock);
    const inFlight = request(seed);
    admittedOrThrow(await steps.quotaCheck(inFlight));
    clock.now = midnight + 1;
    const next = request(seed);
    admittedOrThrow(await steps.quotaCheck(next));
    await steps.billing(inFlight, { ...COMPLETED, status: 'failed_before_output', completionTokens: 0, error: { status: 502, message: 'test', type: 'upstream_error', code: 'upstream_error' } });
    expect(await windowUsed(seed, budgetWindowId('api_key', seed.apiKeyIds[0]!, 'daily', midnight - DAY))).toBe(0);
    expect(await windowUsed(seed, budgetWindowId('api_key', seed.apiKeyIds[0]!, 'daily', midnight))).toBe(RESERVED);
    // A replayed settlement moves nothing again.
    await steps.billing(inFlight, COMPLETED);
    expect(await windowUsed(seed, budgetWindowId('api_key', seed.apiKeyIds[0]!, 'daily', midnight - DAY))).toBe(0);
  });
});

describe('budget windows: a retry after the boundary', () => {
  it('an attempt that reserved before midnight and died before its pending row is retried after it: the row names the old window', async () => {
    const seed = await tenantWithWindows({ key: [{ period: 'daily', limitMicros: 5 * RESERVED }] });
    const midnight = midnightIn(4);
    const clock = { now: midnight - 2_000 };
    const steps = harness(clock);
    const input = request(seed);
    const oldWindow = budgetWindowId('api_key', seed.apiKeyIds[0]!, 'daily', midnight - DAY);
    const newWindow = budgetWindowId('api_key', seed.apiKeyIds[0]!, 'daily', midnight);
    // The first attempt's Redis half: reserved at 23:59:58 (its window counter built first).
    const scripts = stepDeps(redis, db).scripts;
    await steps.budgetWindows.warm(seed.tenantId, { windowId: oldWindow, endMs: midnight });
    await stepDeps(redis, db).warmup.warmTenant(seed.tenantId);
    await stepDeps(redis, db).warmup.warmKey(seed.tenantId, seed.apiKeyIds[0]!);
    expect(await scripts.reserveWithWindows(
      { tenantId: seed.tenantId, apiKeyId: seed.apiKeyIds[0]!, requestId: input.requestId, amountMicros: RESERVED, nowMs: clock.now },
      [{ windowId: oldWindow, limitMicros: 5 * RESERVED, subject: 'key' }],
    )).toMatchObject({ status: 'reserved' });

    clock.now = midnight + 3_000;
    expect(await steps.quotaCheck(input)).toMatchObject({ admitted: true, duplicate: true });
    expect(await ledgerWindows(input.requestId)).toEqual([oldWindow]);
    await steps.billing(input, COMPLETED);
    expect(await windowUsed(seed, oldWindow)).toBe(COST);
    expect(await windowUsed(seed, newWindow)).toBeNull(); // never named by this request: not even built
  });
});

describe('budget windows: several windows on one key, each enforced', () => {
  it('a daily cap of 2 and a monthly cap of 3 reservations: the daily one binds on day 1, the monthly one on day 2', async () => {
    const seed = await tenantWithWindows({ key: [{ period: 'monthly', limitMicros: 3 * RESERVED }, { period: 'daily', limitMicros: 2 * RESERVED }] });
    const day1 = nextMonth(10);
    const clock = { now: day1 };
    const steps = harness(clock);
    const held: BilledRequestInput[] = [];
    for (let i = 0; i < 2; i++) {
      const r = request(seed);
      admittedOrThrow(await steps.quotaCheck(r));
      held.push(r);
    }
    expect(await steps.quotaCheck(request(seed))).toMatchObject({ admitted: false, reason: 'budget_exceeded' }); // daily

    clock.now = day1 + DAY;
    const third = request(seed);
    admittedOrThrow(await steps.quotaCheck(third));
    held.push(third);
    expect(await steps.quotaCheck(request(seed))).toMatchObject({ admitted: false, reason: 'budget_exceeded' }); // monthly: 3 reservations

    const month = budgetWindowId('api_key', seed.apiKeyIds[0]!, 'monthly', nextMonth(1, '00:00:00.000Z'));
    expect(await ledgerWindows(third.requestId)).toEqual([budgetWindowId('api_key', seed.apiKeyIds[0]!, 'daily', nextMonth(11, '00:00:00.000Z')), month]);
    for (const r of held) await steps.billing(r, COMPLETED);
    expect(await windowUsed(seed, month)).toBe(3 * COST);
    expect(await ledgerWindowUsage(month)).toBe(3 * COST);
    // Settled to cost, the month has room again.
    admittedOrThrow(await steps.quotaCheck(request(seed)));
  });

  it('a tenant window and a key window together: the tenant window refuses with insufficient_quota', async () => {
    const seed = await tenantWithWindows({ tenant: [{ period: 'weekly', limitMicros: RESERVED }], key: [{ period: 'daily', limitMicros: 10 * RESERVED }] });
    const steps = harness({ now: midnightIn(1) + 8 * 3600_000 });
    admittedOrThrow(await steps.quotaCheck(request(seed)));
    const denied = request(seed);
    expect(await steps.quotaCheck(denied)).toMatchObject({ admitted: false, reason: 'insufficient_quota' });
    // Refused: no window moved, no ledger row.
    expect(await windowUsed(seed, budgetWindowId('api_key', seed.apiKeyIds[0]!, 'daily', midnightIn(1)))).toBe(RESERVED);
    expect(await db('billing_transaction').where('request_id', denied.requestId).first()).toBeUndefined();
  });
});

describe('budget windows: concurrent admissions', () => {
  it('40 concurrent requests against a window of 10 reservations (the counter starting missing): exactly 10 pass, the window holds exactly them', async () => {
    const seed = await tenantWithWindows({ key: [{ period: 'weekly', limitMicros: 10 * RESERVED }] });
    const steps = harness({ now: midnightIn(1) + 13 * 3600_000 });
    const inputs = Array.from({ length: 40 }, () => request(seed));
    const decisions = await Promise.all(inputs.map((i) => steps.quotaCheck(i)));
    const admitted = inputs.filter((_, i) => decisions[i]!.admitted);
    expect(admitted).toHaveLength(10);
    expect(decisions.filter((d) => !d.admitted && d.reason === 'budget_exceeded')).toHaveLength(30);
    const week = budgetWindowId('api_key', seed.apiKeyIds[0]!, 'weekly', windowBounds('weekly', 'UTC', midnightIn(1) + 13 * 3600_000).startMs);
    expect(await windowUsed(seed, week)).toBe(10 * RESERVED);
    expect(await ledgerWindowUsage(week)).toBe(10 * RESERVED);
    for (const input of admitted) await steps.billing(input, COMPLETED);
    expect(await windowUsed(seed, week)).toBe(10 * COST);
    expect(await ledgerWindowUsage(week)).toBe(10 * COST);
  });
});

describe('budget windows: time zones', () => {
  it('a daily window in Asia/Tokyo turns over at 15:00 UTC', async () => {
    const seed = await tenantWithWindows({ tenant: [{ period: 'daily', limitMicros: RESERVED }], timeZone: 'Asia/Tokyo' });
    // 15:00 UTC = midnight in Tokyo (UTC+9, no DST).
    const boundary = midnightIn(1) + 15 * 3600_000;
    const clock = { now: boundary - 1 };
    const steps = harness(clock);
    const first = request(seed);
    admittedOrThrow(await steps.quotaCheck(first));
    expect(await ledgerWindows(first.requestId)).toEqual([budgetWindowId('tenant', seed.tenantId, 'daily', boundary - DAY)]);
    expect(await steps.quotaCheck(request(seed))).toMatchObject({ admitted: false, reason: 'insufficient_quota' });
    clock.now = boundary;
    const next = request(seed);
    admittedOrThrow(await steps.quotaCheck(next));
    expect(await ledgerWindows(next.requestId)).toEqual([budgetWindowId('tenant', seed.tenantId, 'daily', boundary)]);
  });
});

describe('budget windows: a lost counter is rebuilt from the ledger for that window', () => {
  it('rebuilds committed + pending of the window, and the pending request then settles exactly', async () => {
    const seed = await tenantWithWindows({ key: [{ period: 'daily', limitMicros: 3 * RESERVED }] });
    const clock = { now: midnightIn(1) + 9 * 3600_000 };
    const steps = harness(clock);
    const windowId = budgetWindowId('api_key', seed.apiKeyIds[0]!, 'daily', midnightIn(1));
    const done = request(seed);
    admittedOrThrow(await steps.quotaCheck(done));
    await steps.billing(done, COMPLETED);
    const open = request(seed);
    admittedOrThrow(await steps.quotaCheck(open));
    expect(await windowUsed(seed, windowId)).toBe(COST + RESERVED);

    await redis.del(CacheKeys.budgetWindow(seed.tenantId, windowId));
    const third = request(seed);
    admittedOrThrow(await steps.quotaCheck(third)); // rebuilt: COST + RESERVED, then + RESERVED
    expect(await windowUsed(seed, windowId)).toBe(COST + 2 * RESERVED);
    expect(await steps.quotaCheck(request(seed))).toMatchObject({ admitted: false, reason: 'budget_exceeded' });

    await steps.billing(open, COMPLETED);
    await steps.billing(third, COMPLETED);
    expect(await windowUsed(seed, windowId)).toBe(3 * COST);
    expect(await ledgerWindowUsage(windowId)).toBe(3 * COST);
  });
});

describe('budget windows: a reservation the ledger could not record is given back', () => {
  it('the windows are released with the quota and the key budget when the pending row fails', async () => {
    const seed = await tenantWithWindows({ key: [{ period: 'daily', limitMicros: 5 * RESERVED }] });
    const clock = { now: midnightIn(1) + 11 * 3600_000 };
    const base = stepDeps(redis, db);
    const broken = { ...base, ledger: { ...base.ledger, createPendingTransaction: () => Promise.reject(new Error('ledger unavailable')) } };
    const steps = harness(clock, broken);
    const windowId = budgetWindowId('api_key', seed.apiKeyIds[0]!, 'daily', midnightIn(1));
    await expect(steps.quotaCheck(request(seed))).rejects.toThrow('ledger unavailable');
    expect(await windowUsed(seed, windowId)).toBe(0);
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 0, spent: 0 });
  });
});

describe('budget windows: the PostgreSQL fallback enforces them too', () => {
  it('with Redis unreachable, a window that cannot take the reservation refuses it', async () => {
    const seed = await tenantWithWindows({ key: [{ period: 'daily', limitMicros: RESERVED }] });
    const dead = unreachableRedis();
    try {
      const steps = harness({ now: midnightIn(1) + 10 * 3600_000 }, stepDeps(dead, db));
      const first = request(seed);
      expect(await steps.quotaCheck(first)).toMatchObject({ admitted: true, path: 'postgres' });
      expect(await ledgerWindows(first.requestId)).toEqual([budgetWindowId('api_key', seed.apiKeyIds[0]!, 'daily', midnightIn(1))]);
      expect(await steps.quotaCheck(request(seed))).toMatchObject({ admitted: false, reason: 'budget_exceeded', path: 'postgres' });
    } finally {
      dead.disconnect();
    }
  });
});
