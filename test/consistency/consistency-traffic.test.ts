/**
 * No false drift under traffic (M4.3, M12): while many requests run concurrently through
 * the real QuotaCheckStep and BillingStep (reserve, pending row, commit or void, settle),
 * the consistency check runs again and again. Requests are caught between their Redis and
 * their ledger writes all the time (the test widens both windows with a random delay of up
 * to 40 ms, as a loaded database or Redis would), yet no run may confirm drift or heal
 * anything, and at the end every counter equals the ledger to the micro.
 */
import type { Knex } from 'knex';
import { createBillingStep } from '../../src/activities/billing-step';
import { createQuotaCheckStep } from '../../src/activities/quota-check-step';
import type { ConsistencyRunSummary } from '../../src/consistency/report';
import type { Redis } from '../../src/redis/client';
import type { UpstreamOutcome } from '../../src/workflows/definitions';
import { billedInput, closeTenant, seedTenant, stepDeps, type StepDeps, type TenantSeed } from '../helpers/activity-deps';
import { consistencyHarness, counterMismatches } from '../helpers/consistency';
import { testDb, testRedis } from '../helpers/services';

const TENANTS = 8;
const CLIENTS = 12;
const TRAFFIC_MS = 12_000;
const WINDOW_MS = 40;

let redis: Redis;
let db: Knex;
let base: StepDeps;
const seeds: TenantSeed[] = [];

beforeAll(async () => {
  redis = await testRedis();
  db = testDb();
  base = stepDeps(redis, db);
});
afterAll(async () => {
  for (const seed of seeds) await closeTenant(redis, base.ledger, seed);
  await db.destroy();
  redis.disconnect();
});

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const jitter = () => pause(Math.floor(Math.random() * WINDOW_MS));

/** The real activities' dependencies, with the ledger's pending insert and the Redis settlements delayed a little. */
function slowedDeps(): StepDeps {
  const { ledger, scripts } = base;
  return {
    ...base,
    ledger: { ...ledger, createPendingTransaction: async (...args) => { await jitter(); return ledger.createPendingTransaction(...args); } },
    scripts: {
      ...scripts,
      settleTenant: async (args) => { await jitter(); return scripts.settleTenant(args); },
      settleKeyBudget: async (args) => { await jitter(); return scripts.settleKeyBudget(args); },
    },
  };
}

function outcome(roll: number): UpstreamOutcome {
  const base = { tokenSource: 'upstream' as const, channel: 'default' };
  if (roll < 0.1) return { ...base, status: 'failed_before_output', promptTokens: 0, completionTokens: 0, error: { status: 502, message: 'test', type: 'upstream_error', code: 'upstream_error' } };
  if (roll < 0.2) return { ...base, status: 'client_cancelled', promptTokens: 20, completionTokens: 3 };
  if (roll < 0.3) return { ...base, status: 'completed', promptTokens: 300, completionTokens: 100 }; // overage: 1,750 > 1,050
  return { ...base, status: 'completed', promptTokens: 20, completionTokens: 1 + Math.floor(roll * 99) };
}

describe('consistency check under concurrent traffic (M4.3, M12)', () => {
  it('confirms no drift and heals nothing while requests move between Redis and the ledger, and everything is exact at the end', async () => {
    for (let i = 0; i < TENANTS; i++) seeds.push(await seedTenant(db, 1_000_000_000_000, [{ budgetMicros: 500_000_000_000 }, { budgetMicros: null }]));
    const tenantIds = seeds.map((s) => s.tenantId);
    const deps = slowedDeps();
    const quotaCheck = createQuotaCheckStep(deps);
    const billing = createBillingStep(deps);

    let billed = 0;
    let deadline = Number.POSITIVE_INFINITY;
    const client = async (): Promise<void> => {
      while (Date.now() < deadline) {
        const seed = seeds[Math.floor(Math.random() * seeds.length)]!;
        const input = billedInput(seed.tenantId, seed.apiKeyIds[Math.floor(Math.random() * 2)]!, { promptTokens: 20, maxOutputTokens: 100, reservedMicros: 1_050 });
        const decision = await quotaCheck(input);
        if (!decision.admitted) throw new Error(`admission denied: ${decision.reason}`);
        await pause(Math.floor(Math.random() * 100)); // the upstream call
        await billing(input, outcome(Math.random()));
        billed++;
        // Some tenants go quiet now and then, so checks also meet counters that stop moving.
        if (Math.random() < 0.2) await pause(300 + Math.floor(Math.random() * 700));
      }
    };

    const h = consistencyHarness(redis, db, { settings: { confirmGraceMs: 1_000, confirmRounds: 3 } });
    // New tenants have no counters yet: the first check warms them all (lost or never built: not drift).
    expect(await h.check.run({ tenantIds })).toMatchObject({ status: 'ok', rebuilt: 3 * TENANTS, driftedSubjects: 0 });
    const during: ConsistencyRunSummary[] = [];
    deadline = Date.now() + TRAFFIC_MS;
    const checks = (async () => {
      while (Date.now() < deadline) during.push(await h.check.run({ tenantIds }));
    })();
    await Promise.all([...Array.from({ length: CLIENTS }, client), checks]);

    expect(billed).toBeGreaterThan(200);
    expect(during.length).toBeGreaterThanOrEqual(3);
    expect(during.filter((s) => s.driftedSubjects > 0 || s.heals > 0 || s.rebuilt > 0)).toEqual([]);
    // The checks did meet counters in mid-move (and let them go): the confirmation was exercised.
    const reports = await db('consistency_report').whereIn('id', during.map((s) => s.reportId)).select<Array<{ candidates: number }>>('candidates');
    expect(reports.reduce((sum, r) => sum + r.candidates, 0)).toBeGreaterThan(0);

    // At quiescence: nothing to find, every counter exact.
    const final = await h.check.run({ tenantIds });
    expect(final).toMatchObject({ status: 'ok', driftedSubjects: 0, heals: 0, busy: 0, tenantsChecked: TENANTS, keysChecked: 2 * TENANTS });
    const mismatches = (await Promise.all(seeds.map((seed) => counterMismatches(redis, db, seed)))).flat();
    expect(mismatches).toEqual([]);
  }, 60_000);
});
