/**
 * The scheduled workflows on the time-skipping server (it has no Schedules: the workflow
 * types run directly, as a Schedule would start them), with the real maintenance activities
 * on the real Redis and PostgreSQL: a run syncs and is recorded in sync_run; a failing run is
 * retried with backoff (the skipped time makes the waits instant) and, past its attempts,
 * fails visibly with every attempt recorded.
 */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { WorkflowFailedError } from '@temporalio/client';
import type { Knex } from 'knex';
import { Registry } from 'prom-client';
import { createMaintenanceActivities } from '../../src/activities/maintenance-jobs';
import type { ConsistencyRunSummary } from '../../src/consistency/report';
import { createSyncRunRepository, type SyncRunRecord } from '../../src/db/sync-run-repository';
import { createLogger } from '../../src/log';
import { createMaintenanceMetrics } from '../../src/metrics';
import type { Redis } from '../../src/redis/client';
import { createCounterSync, type CounterSync } from '../../src/sync/counter-sync';
import { apiKeySyncWorkflow, consistencyCheckWorkflow, quotaSyncWorkflow, reservationSweepWorkflow } from '../../src/workflows/maintenance';
import { billedInput, closeTenant, metricValue, seedTenant, stepDeps, type StepDeps, type TenantSeed } from '../helpers/activity-deps';
import { testDb, testRedis, uniqueId } from '../helpers/services';
import { timeSkippingEnv, withWorker } from '../helpers/temporal';
import { createQuotaCheckStep } from '../../src/activities/quota-check-step';

const workflowsPath = require.resolve('../../src/workflows');

let env: TestWorkflowEnvironment;
let redis: Redis;
let db: Knex;
let deps: StepDeps;
let seed: TenantSeed;

beforeAll(async () => {
  env = await timeSkippingEnv();
  redis = await testRedis();
  db = testDb();
  deps = stepDeps(redis, db);
  seed = await seedTenant(db, 10_000_000);
  // One reservation in flight: the counter the syncs copy is live and non-zero.
  const decision = await createQuotaCheckStep(deps)(billedInput(seed.tenantId, seed.apiKeyIds[0]!, { reservedMicros: 123_456 }));
  expect(decision.admitted).toBe(true);
}, 60_000);
afterAll(async () => {
  await closeTenant(redis, deps.ledger, seed);
  await env?.teardown();
  redis.disconnect();
  await db.destroy();
});

/** What the sweeper's activity answered (its own tests run the real one: test/sweeper/). */
const SWEPT = { examined: 4, stillRunning: 1, committed: 2, voided: 1, withoutHistory: 0, errors: 0, expiredBodiesDeleted: 3, truncated: false };

/** A consistency check that healed (its own tests run the real one: test/consistency/); a full check here would touch other files' tenants. */
const HEALED: ConsistencyRunSummary = { reportId: 1, status: 'drift', tenantsChecked: 3, keysChecked: 4, tenantDriftMicros: 777, apikeyDriftMicros: 0, driftedSubjects: 1, healed: true, heals: 1, rebuilt: 0, busy: 0, alerted: true, syncNeeded: true, durationMs: 12 };

/**
 * The runs this test's activities record: written to sync_run as in production, and kept here,
 * because other test files' syncs and Schedules write sync_run rows at the same time.
 */
let recorded: SyncRunRecord[] = [];

function activities(registry: Registry, counterSync: Pick<CounterSync, 'syncTenantQuotas' | 'syncApiKeyBudgets'> = createCounterSync(db, redis)) {
  const runs = createSyncRunRepository(db);
  return createMaintenanceActivities({
    counterSync,
    consistencyCheck: { run: () => Promise.resolve({ ...HEALED }) },
    sweepPendingReservations: () => Promise.resolve({ ...SWEPT }),
    drainOutbox: () => Promise.reject(new Error('the outbox drain is tested in test/dispatch/')),
    exportUsage: () => Promise.reject(new Error('the usage export is tested in test/export/')),
    reconcileUsageExport: () => Promise.reject(new Error('the usage export is tested in test/export/')),
    syncRuns: { record: async (run) => { recorded.push(run); await runs.record(run); } },
    maintenanceMetrics: createMaintenanceMetrics(registry),
    log: createLogger('silent', 'test'),
  });
}

function runsOf(job: string): Array<{ outcome: string; written: number }> {
  return recorded.filter((r) => r.job === job).map((r) => ({ outcome: r.outcome, written: r.written ?? 0 }));
}

beforeEach(() => {
  recorded = [];
});

describe('maintenance workflows (time-skipping)', () => {
  it('quotaSyncWorkflow and apiKeySyncWorkflow sync the tenant and record each run', async () => {
    const registry = new Registry();
    const scope = { tenantIds: [seed.tenantId] };

    const [quota, apikey] = await withWorker(env, { workflowsPath, activities: activities(registry) }, async (taskQueue) => [
      await env.client.workflow.execute(quotaSyncWorkflow, { taskQueue, workflowId: uniqueId('quota-sync'), args: [scope] }),
      await env.client.workflow.execute(apiKeySyncWorkflow, { taskQueue, workflowId: uniqueId('apikey-sync'), args: [scope] }),
    ]);

    expect(quota).toMatchObject({ job: 'quota', subjects: 1, written: 1 });
    expect(apikey).toMatchObject({ job: 'apikey', subjects: 1, written: 1 });
    const tenant = await db('tenant_quota').where({ tenant_id: seed.tenantId }).first();
    const key = await db('api_key_quota').where({ id: seed.apiKeyIds[0] }).first();
    expect(Number(tenant.used_micros)).toBe(123_456);
    expect(Number(key.spent_micros)).toBe(123_456);
    expect(runsOf('quota')).toEqual([{ outcome: 'ok', written: 1 }]);
    expect(await metricValue(registry, 'billing_sync_runs_total', { task: 'quota', outcome: 'ok' })).toBe(1);
    expect(await metricValue(registry, 'billing_sync_rows_written_total', { task: 'apikey' })).toBe(1);
  });

  it('a failing run is retried with backoff and succeeds; past its attempts the workflow fails, every attempt recorded', async () => {
    const registry = new Registry();
    const real = activities(registry);
    let attempts = 0;
    // PostgreSQL refusing the first two attempts (the error is raised by the wrapped job, so it is recorded like a real one).
    const flaky = {
      ...real,
      syncTenantQuotas: (scope?: { tenantIds?: string[] }) => {
        attempts++;
        return attempts <= 2 ? Promise.reject(new Error('connection refused')) : real.syncTenantQuotas(scope);
      },
    };

    const result = await withWorker(env, { workflowsPath, activities: flaky }, (taskQueue) =>
      env.client.workflow.execute(quotaSyncWorkflow, { taskQueue, workflowId: uniqueId('quota-sync'), args: [{ tenantIds: [seed.tenantId] }] }));

    expect(attempts).toBe(3);
    expect(result.written).toBe(1);

    // A job that never succeeds (PostgreSQL refusing every attempt): three attempts, then the run fails (the next period starts a new one).
    const refused = () => Promise.reject(new Error('connection refused'));
    const broken = activities(registry, { syncTenantQuotas: refused, syncApiKeyBudgets: refused });
    await expect(withWorker(env, { workflowsPath, activities: broken }, (taskQueue) =>
      env.client.workflow.execute(quotaSyncWorkflow, { taskQueue, workflowId: uniqueId('quota-sync'), args: [{ tenantIds: [seed.tenantId] }] })))
      .rejects.toBeInstanceOf(WorkflowFailedError);
    const runs = runsOf('quota');
    expect(runs.filter((r) => r.outcome === 'ok')).toHaveLength(1);
    expect(runs.filter((r) => r.outcome === 'error')).toHaveLength(3);
    expect(await metricValue(registry, 'billing_sync_runs_total', { task: 'quota', outcome: 'error' })).toBe(3);
  });

  it('reservationSweepWorkflow runs the sweeper and records what it examined and ended', async () => {
    const registry = new Registry();

    const result = await withWorker(env, { workflowsPath, activities: activities(registry) }, (taskQueue) =>
      env.client.workflow.execute(reservationSweepWorkflow, { taskQueue, workflowId: uniqueId('reservation-sweep') }));

    expect(result).toEqual(SWEPT);
    expect(runsOf('sweep')).toEqual([{ outcome: 'ok', written: 6 }]);
    expect(await metricValue(registry, 'billing_sync_runs_total', { task: 'sweep', outcome: 'ok' })).toBe(1);
  });

  it('consistencyCheckWorkflow runs both syncs at once after a heal (M4.5), and records all three runs', async () => {
    const registry = new Registry();

    const result = await withWorker(env, { workflowsPath, activities: activities(registry) }, (taskQueue) =>
      env.client.workflow.execute(consistencyCheckWorkflow, { taskQueue, workflowId: uniqueId('consistency-check') }));

    expect(result).toEqual(HEALED);
    expect(runsOf('consistency')).toEqual([{ outcome: 'ok', written: 1 }]);
    expect(runsOf('quota').map((r) => r.outcome)).toEqual(['ok']);
    expect(runsOf('apikey').map((r) => r.outcome)).toEqual(['ok']);
  });
});
