/**
 * The maintenance Schedules on the real dev server (the time-skipping server has none),
 * created by real workers at start (M4, M4.5): one Schedule per job however many workers
 * start, updated when a period changes, a paused one left paused, triggerable as the Web UI
 * does (handle.trigger) and through POST /admin/sync/:job, which answers with the run's
 * workflow id; a top-up runs a quota sync of its tenant at once; every run lands in sync_run
 * and the lag metric.
 */
import { Client, ScheduleOverlapPolicy } from '@temporalio/client';
import type { Knex } from 'knex';
import { createLogger } from '../../src/log';
import { ensureMaintenanceSchedules } from '../../src/schedules/maintenance-schedules';
import { MAINTENANCE_JOBS, MAINTENANCE_JOB_NAMES } from '../../src/workflows/maintenance-jobs';
import type { SyncRunSummary } from '../../src/sync/counter-sync';
import { chat, startTestApp, TEST_MODEL, type TestApp } from '../helpers/app';
import { ledgerUsage, settled } from '../helpers/ledger';
import { devServerEnv } from '../helpers/temporal';
import { testDb, uniqueId } from '../helpers/services';
import type { TestWorkflowEnvironment } from '@temporalio/testing';

// The consistency check every 30 days: a full check firing while other test files run could heal a
// counter one of them drifted on purpose. The test deletes its Schedules when it ends.
const PERIOD_OF = { quota: 300, apikey: 600, consistency: 30 * 86_400, sweep: 300, outbox: 60, export: 30, export_reconcile: 86_400 } as const;
const PERIODS = {
  QUOTA_SYNC_INTERVAL_SECONDS: String(PERIOD_OF.quota),
  APIKEY_SYNC_INTERVAL_SECONDS: String(PERIOD_OF.apikey),
  CONSISTENCY_CHECK_INTERVAL_SECONDS: String(PERIOD_OF.consistency),
  RESERVATION_SWEEP_INTERVAL_SECONDS: String(PERIOD_OF.sweep),
  OUTBOX_DRAIN_INTERVAL_SECONDS: String(PERIOD_OF.outbox),
  USAGE_EXPORT_INTERVAL_SECONDS: String(PERIOD_OF.export),
  USAGE_EXPORT_RECONCILE_INTERVAL_SECONDS: String(PERIOD_OF.export_reconcile),
};
const scheduleEnv = { MAINTENANCE_SCHEDULES: 'true', ...PERIODS };

describe('maintenance Schedules (M4)', () => {
  const taskQueue = uniqueId('maintenance');
  let first: TestApp;
  let second: TestApp;
  let env: TestWorkflowEnvironment;
  let client: Client;
  let db: Knex;

  async function deleteSchedules(): Promise<void> {
    for (const job of MAINTENANCE_JOB_NAMES) {
      await client.schedule.getHandle(MAINTENANCE_JOBS[job].scheduleId).delete().catch(() => undefined);
    }
  }

  beforeAll(async () => {
    env = await devServerEnv();
    client = env.client;
    db = testDb();
    await deleteSchedules();
    // Two workers started at once, then one of them again: each runs the idempotent create-or-update.
    [first, second] = await Promise.all([startTestApp({ taskQueue, env: scheduleEnv }), startTestApp({ taskQueue, env: scheduleEnv })]);
  }, 120_000);
  afterAll(async () => {
    await second?.stop();
    await first?.stop();
    // Nothing of this file fires while other test files run.
    if (client) await deleteSchedules();
    await env?.teardown();
    await db?.destroy();
  });

  it('two workers leave exactly one Schedule per job, each on the configured period, overlap SKIP', async () => {
    for (const job of MAINTENANCE_JOB_NAMES) {
      const { scheduleId, workflowType } = MAINTENANCE_JOBS[job];
      const description = await client.schedule.getHandle(scheduleId).describe();
      expect(description.action).toMatchObject({ type: 'startWorkflow', workflowType, taskQueue });
      expect(description.policies.overlap).toBe(ScheduleOverlapPolicy.SKIP);
      expect(description.spec.intervals?.map((i) => i.every)).toEqual([PERIOD_OF[job] * 1000]);
    }
    const ids: string[] = [];
    for await (const s of client.schedule.list()) ids.push(s.scheduleId);
    for (const job of MAINTENANCE_JOB_NAMES) expect(ids.filter((id) => id === MAINTENANCE_JOBS[job].scheduleId)).toHaveLength(1);

    // A third start with the same settings changes nothing.
    const again = await ensureMaintenanceSchedules(client, { taskQueue, periodsSeconds: { ...PERIOD_OF }, log: createLogger('silent', 'test') });
    expect(again).toEqual({ quota: 'unchanged', apikey: 'unchanged', consistency: 'unchanged', sweep: 'unchanged', outbox: 'unchanged', export: 'unchanged', export_reconcile: 'unchanged' });
  });

  it('a period change updates the Schedule; a Schedule an operator paused stays paused', async () => {
    const handle = client.schedule.getHandle(MAINTENANCE_JOBS.apikey.scheduleId);
    await handle.pause('paused by an operator in the test');
    const log = createLogger('silent', 'test');

    const changed = await ensureMaintenanceSchedules(client, { taskQueue, periodsSeconds: { ...PERIOD_OF, apikey: 120 }, log });

    expect(changed).toEqual({ quota: 'unchanged', apikey: 'updated', consistency: 'unchanged', sweep: 'unchanged', outbox: 'unchanged', export: 'unchanged', export_reconcile: 'unchanged' });
    const description = await handle.describe();
    expect(description.spec.intervals?.map((i) => i.every)).toEqual([120_000]);
    expect(description.state.paused).toBe(true);
    await ensureMaintenanceSchedules(client, { taskQueue, periodsSeconds: { ...PERIOD_OF }, log });
    await handle.unpause();
  });

  it('a trigger (the Web UI\'s "Trigger" button) runs the job on a worker, recorded in sync_run', async () => {
    const before = await db('sync_run').where({ job: 'quota', outcome: 'ok' }).count<{ count: string }[]>({ count: '*' });
    const handle = client.schedule.getHandle(MAINTENANCE_JOBS.quota.scheduleId);

    await handle.trigger(ScheduleOverlapPolicy.ALLOW_ALL);

    const deadline = Date.now() + 30_000;
    let runs = 0;
    while (Date.now() < deadline) {
      const rows = await db('sync_run').where({ job: 'quota', outcome: 'ok' }).count<{ count: string }[]>({ count: '*' });
      runs = Number(rows[0]!.count) - Number(before[0]!.count);
      if (runs > 0) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(runs).toBeGreaterThanOrEqual(1);
    const recent = (await handle.describe()).info.recentActions;
    expect(recent.at(-1)?.action.workflow.workflowId).toMatch(/^quota-sync-/);
  });

  it('POST /admin/sync/:job answers 202 with the run\'s workflow id; the run syncs the tenant the request billed', async () => {
    const { tenantId, key } = await first.tenant();
    const res = await chat(first, key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'sync me' }] });
    expect(res.status).toBe(200);
    await settled(db, tenantId);

    const started = await first.admin<{ job: string; workflow_id: string; run_id: string }>('POST', '/admin/sync/quota');

    expect(started.status).toBe(202);
    expect(started.body.job).toBe('quota');
    expect(started.body.workflow_id).toMatch(/^quota-sync-manual-/);
    const summary = await client.workflow.getHandle<() => Promise<SyncRunSummary>>(started.body.workflow_id).result();
    expect(summary.job).toBe('quota');
    expect(summary.subjects).toBeGreaterThanOrEqual(1);
    const row = await db('tenant_quota').where({ tenant_id: tenantId }).first();
    expect(Number(row.used_micros)).toBe(await ledgerUsage(db, tenantId));
    expect(Number(row.used_micros)).toBeGreaterThan(0);
    expect(row.synced_at).not.toBeNull();

    const apikey = await first.admin<{ workflow_id: string }>('POST', '/admin/sync/apikey');
    expect(apikey.status).toBe(202);
    await client.workflow.getHandle(apikey.body.workflow_id).result();

    const metrics = await (await fetch(`${first.url}/metrics`)).text();
    const lag = /^billing_sync_lag_seconds\{task="quota"\} (\S+)$/m.exec(metrics);
    expect(lag).not.toBeNull();
    expect(Number(lag![1])).toBeLessThan(60);
  });

  it('a top-up syncs its tenant at once (M4.5)', async () => {
    const { tenantId, key } = await first.tenant();
    // A tenant with live counters in Redis (one never used has none to sync).
    expect((await chat(first, key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'before the top-up' }] })).status).toBe(200);
    await settled(db, tenantId);
    const toppedAt = new Date();
    const top = await first.admin('POST', `/admin/tenants/${tenantId}/topups`, { amount_micros: 1_000_000, reference: uniqueId('ref') });
    expect(top.status).toBe(201);
    const deadline = Date.now() + 30_000;
    let row: { synced_at: Date | null; used_micros: string } | undefined;
    while (Date.now() < deadline) {
      row = await db('tenant_quota').where({ tenant_id: tenantId }).first();
      if (row?.synced_at && row.synced_at >= toppedAt) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(row?.synced_at?.getTime()).toBeGreaterThanOrEqual(toppedAt.getTime());
    expect(Number(row?.used_micros)).toBe(await ledgerUsage(db, tenantId));
    const runs: string[] = [];
    for await (const wf of client.workflow.list({ query: `WorkflowType = 'quotaSyncWorkflow' AND TaskQueue = '${taskQueue}'` })) runs.push(wf.workflowId);
    expect(runs.some((id) => id.startsWith('quota-sync-topup-'))).toBe(true);
  });

  it('an unknown job is 404 and no admin token is 401, both in the OpenAI error shape', async () => {
    const unknown = await first.admin<{ error: { code: string; message: string } }>('POST', '/admin/sync/everything');
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.message).toContain('quota, apikey, consistency, sweep, outbox, export, export_reconcile');
    const anonymous = await fetch(`${first.url}/admin/sync/quota`, { method: 'POST' });
    expect(anonymous.status).toBe(401);
    expect(((await anonymous.json()) as { error: { type: string } }).error.type).toBeDefined();
  });
});
