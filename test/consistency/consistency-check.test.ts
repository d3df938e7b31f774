/**
 * The consistency check (M4.3, M12) on the real Redis and PostgreSQL: drift is found only
 * when it is real (confirmed over a grace period in which nothing moved), healed from one
 * ledger snapshot without losing a reservation in flight, and reported. Requests go
 * through the real QuotaCheckStep and BillingStep; every run is scoped to this test's
 * tenants (the database and Redis are shared with other test files).
 *
 * Prices (TEST_PRICE): 2.5 micros per prompt token, 10 per completion token. Every request
 * here has 20 prompt tokens and a 100-token cap: 50 + 1,000 = 1,050 micros reserved; a
 * completion of 16 tokens costs 50 + 160 = 210.
 */
import type { Knex } from 'knex';
import { createBillingStep } from '../../src/activities/billing-step';
import { createQuotaCheckStep } from '../../src/activities/quota-check-step';
import type { Redis } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';
import type { UpstreamOutcome } from '../../src/workflows/definitions';
import { billedInput, closeTenant, metricValue, seedTenant, stepDeps, type StepDeps, type TenantSeed } from '../helpers/activity-deps';
import { consistencyHarness, counterMismatches } from '../helpers/consistency';
import { testDb, testRedis } from '../helpers/services';

let redis: Redis;
let db: Knex;
let deps: StepDeps;
const seeds: TenantSeed[] = [];

beforeAll(async () => {
  redis = await testRedis();
  db = testDb();
  deps = stepDeps(redis, db);
});
afterAll(async () => {
  for (const seed of seeds) await closeTenant(redis, deps.ledger, seed);
  await db.destroy();
  redis.disconnect();
});

const RESERVED = 1_050;
const COST = 210;
const completed: UpstreamOutcome = { status: 'completed', promptTokens: 20, completionTokens: 16, tokenSource: 'upstream', channel: 'default' };

async function tenant(): Promise<TenantSeed> {
  const seed = await seedTenant(db, 10_000_000, [{ budgetMicros: 5_000_000 }, { budgetMicros: null }]);
  seeds.push(seed);
  return seed;
}

const quotaCheck = () => createQuotaCheckStep(deps);
const billing = () => createBillingStep(deps);

async function admit(seed: TenantSeed, keyIndex = 0) {
  const input = billedInput(seed.tenantId, seed.apiKeyIds[keyIndex]!, { promptTokens: 20, maxOutputTokens: 100, reservedMicros: RESERVED });
  const decision = await quotaCheck()(input);
  if (!decision.admitted) throw new Error(`test setup: admission denied (${decision.reason})`);
  return input;
}

/** A tenant with two settled requests on key 0, one on key 1, and one still pending on key 0. */
async function busyTenant(): Promise<{ seed: TenantSeed; open: Awaited<ReturnType<typeof admit>> }> {
  const seed = await tenant();
  for (const keyIndex of [0, 0, 1]) await billing()(await admit(seed, keyIndex), completed);
  return { seed, open: await admit(seed, 0) };
}

const usedOf = async (seed: TenantSeed) => Number(await redis.hget(CacheKeys.tenantQuota(seed.tenantId), 'used_micros'));

describe('consistency check: nothing to find (M4.3)', () => {
  it('reports a tenant whose counters match the ledger as ok, with nothing drifted, rebuilt or busy', async () => {
    const { seed } = await busyTenant();
    const h = consistencyHarness(redis, db);
    const summary = await h.check.run({ tenantIds: [seed.tenantId] });
    expect(summary).toMatchObject({
      status: 'ok', tenantsChecked: 1, keysChecked: 2, tenantDriftMicros: 0, apikeyDriftMicros: 0,
      driftedSubjects: 0, healed: false, heals: 0, rebuilt: 0, busy: 0, alerted: false, syncNeeded: false,
    });
    const report = await h.reports.latest();
    expect(report).toMatchObject({ id: summary.reportId, status: 'ok', candidates: 0, drifted: [], scopeTenantIds: [seed.tenantId], neverSynced: 3 });
    expect(report?.finishedAt).toBeInstanceOf(Date);
    expect(await counterMismatches(redis, db, seed)).toEqual([]);
  });
});

describe('consistency check: drift detected, reported and healed (M4.3, M12)', () => {
  it('a counter changed by hand is confirmed, reported with exact figures and rebuilt from the ledger', async () => {
    const { seed, open } = await busyTenant();
    // Ledger: tenant 3 x 210 + 1,050 pending = 1,680; key 0: 2 x 210 + 1,050 = 1,470; key 1: 210.
    await redis.hincrby(CacheKeys.tenantQuota(seed.tenantId), 'used_micros', 777);
    await redis.hset(CacheKeys.apiKeyBudget(seed.tenantId, seed.apiKeyIds[0]!), 'spent_micros', '12345');
    const h = consistencyHarness(redis, db);

    const summary = await h.check.run({ tenantIds: [seed.tenantId] });

    expect(summary).toMatchObject({ status: 'drift', driftedSubjects: 2, tenantDriftMicros: 777, apikeyDriftMicros: 12_345 - 1_470, healed: true, heals: 2, alerted: true, syncNeeded: true });
    const report = await h.reports.latest();
    expect(report?.drifted).toEqual([
      { kind: 'tenant', tenantId: seed.tenantId, apiKeyId: null, redisMicros: 2_457, ledgerMicros: 1_680, syncedMicros: 0, syncedAt: null, driftMicros: 777, syncedDriftMicros: null, healed: true, outcome: 'healed' },
      { kind: 'api_key', tenantId: seed.tenantId, apiKeyId: seed.apiKeyIds[0], redisMicros: 12_345, ledgerMicros: 1_470, syncedMicros: 0, syncedAt: null, driftMicros: 10_875, syncedDriftMicros: null, healed: true, outcome: 'healed' },
    ]);
    expect(report).toMatchObject({ tenantsDrifted: 1, keysDrifted: 1, candidates: 2, busy: 0 });
    expect(await counterMismatches(redis, db, seed)).toEqual([]);

    // The reservation in flight was not lost: it settles against the rebuilt counters exactly.
    await billing()(open, completed);
    expect(await counterMismatches(redis, db, seed)).toEqual([]);
    expect(await usedOf(seed)).toBe(4 * COST);
    // A second run finds nothing.
    expect(await h.check.run({ tenantIds: [seed.tenantId] })).toMatchObject({ status: 'ok', driftedSubjects: 0, heals: 0 });
  });

  it('a heal while requests are in flight loses no reservation, and a request committed but not yet settled in Redis is charged once', async () => {
    const seed = await tenant();
    const inFlight = [await admit(seed, 0), await admit(seed, 1), await admit(seed, 0)];
    // inFlight[2]'s BillingStep committed the ledger and died before its Redis settlement.
    await deps.ledger.commitPendingTransaction({ requestId: inFlight[2]!.requestId, amountMicros: COST, promptTokens: 20, completionTokens: 16, tokenSource: 'upstream' });
    await redis.hincrby(CacheKeys.tenantQuota(seed.tenantId), 'used_micros', -500);

    const h = consistencyHarness(redis, db);
    const summary = await h.check.run({ tenantIds: [seed.tenantId] });
    // Both counters still hold inFlight[2]'s reservation (1,050) where the ledger holds its cost (210); the tenant is also 500 low.
    expect(summary).toMatchObject({ status: 'drift', tenantDriftMicros: RESERVED - COST - 500, apikeyDriftMicros: RESERVED - COST, heals: 2, healed: true });
    expect(await usedOf(seed)).toBe(2 * RESERVED + COST);
    expect(await counterMismatches(redis, db, seed)).toEqual([]);

    // The workflows carry on: the replayed settlement applies 0, the others refund to cost.
    const results = await Promise.all(inFlight.map((input) => billing()(input, completed)));
    expect(results.map((r) => r.deltaMicros)).toEqual([COST - RESERVED, COST - RESERVED, 0]);
    expect(await usedOf(seed)).toBe(3 * COST);
    expect(await counterMismatches(redis, db, seed)).toEqual([]);
  });

  it('a missing counter is not drift: it is rebuilt from the ledger, marking the reservations in flight', async () => {
    const { seed, open } = await busyTenant();
    await redis.del(CacheKeys.tenantQuota(seed.tenantId), CacheKeys.apiKeyBudget(seed.tenantId, seed.apiKeyIds[0]!));
    const h = consistencyHarness(redis, db);
    const summary = await h.check.run({ tenantIds: [seed.tenantId] });
    expect(summary).toMatchObject({ status: 'ok', driftedSubjects: 0, rebuilt: 2, heals: 0 });
    expect(await metricValue(h.registry, 'billing_consistency_rebuilds_total', { kind: 'tenant' })).toBe(1);
    expect(await metricValue(h.registry, 'billing_consistency_rebuilds_total', { kind: 'api_key' })).toBe(1);
    expect(await counterMismatches(redis, db, seed)).toEqual([]);
    expect(await redis.hget(CacheKeys.request(seed.tenantId, open.requestId), 'tenant_warmup_id')).toBe(await redis.hget(CacheKeys.tenantQuota(seed.tenantId), 'warmup_id'));
    await billing()(open, completed);
    expect(await counterMismatches(redis, db, seed)).toEqual([]);
  });

  it('with healing off a confirmed drift is reported, not healed', async () => {
    const { seed } = await busyTenant();
    await redis.hincrby(CacheKeys.tenantQuota(seed.tenantId), 'used_micros', 40);
    const h = consistencyHarness(redis, db, { settings: { heal: false } });
    expect(await h.check.run({ tenantIds: [seed.tenantId] })).toMatchObject({ status: 'drift', tenantDriftMicros: 40, healed: false, heals: 0 });
    expect((await h.reports.latest())?.drifted).toMatchObject([{ kind: 'tenant', driftMicros: 40, healed: false, outcome: 'not_healed' }]);
    expect(await counterMismatches(redis, db, seed)).toEqual([`tenant ${seed.tenantId}: redis 1720 != ledger 1680`]);
  });
});

describe('consistency check: confirmation (M4.3)', () => {
  it('a counter that keeps moving between reads is busy, not drift, and is left alone; once quiet it is healed', async () => {
    const seed = await tenant();
    await billing()(await admit(seed, 0), completed);
    await redis.hincrby(CacheKeys.tenantQuota(seed.tenantId), 'used_micros', 777);
    const moving: Array<Awaited<ReturnType<typeof admit>>> = [];
    // Traffic during every grace period: a new reservation each time (Redis and ledger both move).
    const h = consistencyHarness(redis, db, { sleep: async () => void moving.push(await admit(seed, 0)) });

    const summary = await h.check.run({ tenantIds: [seed.tenantId] });

    expect(summary).toMatchObject({ status: 'ok', driftedSubjects: 0, heals: 0, busy: 1 });
    expect((await h.reports.latest())?.busySubjects).toEqual([{ kind: 'tenant', tenantId: seed.tenantId, apiKeyId: null }]);
    expect(moving).toHaveLength(3); // one per confirmation round
    expect(await counterMismatches(redis, db, seed)).toEqual([`tenant ${seed.tenantId}: redis ${777 + COST + 3 * RESERVED} != ledger ${COST + 3 * RESERVED}`]);

    const quiet = consistencyHarness(redis, db);
    expect(await quiet.check.run({ tenantIds: [seed.tenantId] })).toMatchObject({ status: 'drift', tenantDriftMicros: 777, heals: 1 });
    for (const input of moving) await billing()(input, completed);
    expect(await counterMismatches(redis, db, seed)).toEqual([]);
    expect(await usedOf(seed)).toBe(4 * COST);
  });

  it('a request caught between Redis and the ledger is a transient candidate, never drift', async () => {
    const seed = await tenant();
    await billing()(await admit(seed, 0), completed); // warms the counters
    // Window 1: committed in the ledger, not settled in Redis yet (BillingStep between its two writes).
    const settling = await admit(seed, 1);
    await deps.ledger.commitPendingTransaction({ requestId: settling.requestId, amountMicros: COST, promptTokens: 20, completionTokens: 16, tokenSource: 'upstream' });
    // Window 2: reserved in Redis, pending row not written yet (QuotaCheckStep between its two writes).
    const reserving = billedInput(seed.tenantId, seed.apiKeyIds[0]!, { promptTokens: 20, maxOutputTokens: 100, reservedMicros: RESERVED });
    expect(await deps.scripts.reserve({ tenantId: seed.tenantId, apiKeyId: reserving.apiKeyId, requestId: reserving.requestId, amountMicros: RESERVED, nowMs: 1 })).toMatchObject({ status: 'reserved' });

    // Both requests take their second step during the grace period.
    const h = consistencyHarness(redis, db, {
      sleep: async () => {
        await deps.ledger.createPendingTransaction({
          requestId: reserving.requestId, tenantId: seed.tenantId, apiKeyId: reserving.apiKeyId, workflowId: `wf-${reserving.requestId}`,
          model: reserving.model, reservedMicros: RESERVED, admissionPath: 'redis',
        });
        await billing()(settling, completed);
      },
    });
    const summary = await h.check.run({ tenantIds: [seed.tenantId] });

    expect(summary).toMatchObject({ status: 'ok', driftedSubjects: 0, heals: 0, busy: 0 });
    // The tenant and both keys were candidates at the first read.
    expect((await h.reports.latest())?.candidates).toBe(3);
    expect(await counterMismatches(redis, db, seed)).toEqual([]);
  });
});

describe('consistency check: a counter lost between the reads (M4.3)', () => {
  it('a drifted counter that vanishes during the grace period is rebuilt, not declared drift', async () => {
    const { seed, open } = await busyTenant();
    await redis.hincrby(CacheKeys.tenantQuota(seed.tenantId), 'used_micros', 300);
    const h = consistencyHarness(redis, db, { sleep: async () => void (await redis.del(CacheKeys.tenantQuota(seed.tenantId))) });
    expect(await h.check.run({ tenantIds: [seed.tenantId] })).toMatchObject({ status: 'ok', driftedSubjects: 0, heals: 0, rebuilt: 1, busy: 0 });
    expect(await counterMismatches(redis, db, seed)).toEqual([]);
    await billing()(open, completed);
    expect(await counterMismatches(redis, db, seed)).toEqual([]);
  });
});

describe('consistency check: the synced tables (M4.3)', () => {
  it('compares a synced copy only when nothing moved since its sync: a wrong quiet copy is reported, a lagging one counted', async () => {
    const seed = await tenant();
    await billing()(await admit(seed, 0), completed);
    await billing()(await admit(seed, 1), completed);
    await new Promise((r) => setTimeout(r, 100)); // past the sync margin (the grace, 50 ms here)
    // The tenant's copy is wrong and quiet; key 0's is right; key 1 moved after its sync.
    await db('tenant_quota').where('tenant_id', seed.tenantId).update({ used_micros: 999, synced_at: db.fn.now() });
    await db('api_key_quota').where('id', seed.apiKeyIds[0]).update({ spent_micros: COST, synced_at: db.fn.now() });
    await db('api_key_quota').where('id', seed.apiKeyIds[1]).update({ spent_micros: 0, synced_at: db.raw(`now() - interval '1 hour'`) });

    const h = consistencyHarness(redis, db);
    const summary = await h.check.run({ tenantIds: [seed.tenantId] });

    expect(summary).toMatchObject({ status: 'drift', tenantDriftMicros: 0, apikeyDriftMicros: 0, driftedSubjects: 1, heals: 0, alerted: false, syncNeeded: true });
    const report = await h.reports.latest();
    expect(report).toMatchObject({ tenantSyncedDriftMicros: 999 - 2 * COST, apikeySyncedDriftMicros: 0, syncedLagging: 1, neverSynced: 0, tenantsDrifted: 0 });
    expect(report?.drifted).toEqual([{
      kind: 'tenant', tenantId: seed.tenantId, apiKeyId: null, redisMicros: 2 * COST, ledgerMicros: 2 * COST, syncedMicros: 999,
      syncedAt: expect.any(Date), driftMicros: 0, syncedDriftMicros: 999 - 2 * COST, healed: false, outcome: 'synced_only',
    }]);
  });
});

describe('consistency check: the alert (M4.3, M13)', () => {
  it('drift above the threshold logs one warning with ids and amounts only; drift at or below it does not', async () => {
    const { seed } = await busyTenant();
    await redis.hincrby(CacheKeys.tenantQuota(seed.tenantId), 'used_micros', 1_000);
    const below = consistencyHarness(redis, db, { settings: { driftThresholdMicros: 1_000 } });
    expect(await below.check.run({ tenantIds: [seed.tenantId] })).toMatchObject({ status: 'drift', tenantDriftMicros: 1_000, alerted: false, heals: 1 });
    expect(below.logLines.filter((l) => l.includes('"level":40'))).toEqual([]);

    await redis.hincrby(CacheKeys.tenantQuota(seed.tenantId), 'used_micros', 1_001);
    const above = consistencyHarness(redis, db, { settings: { driftThresholdMicros: 1_000 } });
    const summary = await above.check.run({ tenantIds: [seed.tenantId] });
    expect(summary).toMatchObject({ alerted: true, tenantDriftMicros: 1_001 });
    const warnings = above.logLines.filter((l) => l.includes('"level":40')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({
      msg: 'consistency drift: Redis counters disagreed with the ledger', reportId: summary.reportId, tenantDriftMicros: 1_001, thresholdMicros: 1_000,
      subjects: [{ kind: 'tenant', tenantId: seed.tenantId, apiKeyId: null, redisMicros: 1_680 + 1_001, ledgerMicros: 1_680, driftMicros: 1_001, healed: true }],
    });
    expect(await metricValue(above.registry, 'billing_consistency_heals_total', { kind: 'tenant' })).toBe(1);
    expect(await metricValue(above.registry, 'billing_consistency_runs_total', { status: 'drift' })).toBe(1);
    expect(await counterMismatches(redis, db, seed)).toEqual([]);
  });
});
