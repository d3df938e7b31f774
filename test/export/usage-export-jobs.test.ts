/**
 * The usage export as Temporal runs it: the maintenance workflows usageExportWorkflow and
 * usageExportReconcileWorkflow on the time-skipping server (it has no Schedules: the
 * workflow types run directly, as their Schedules would start them), with the real export
 * activities configured from the environment settings (USAGE_EXPORT_*), on a database of this
 * file's own; then the admin endpoints and the gauges over what they left.
 */
import { Writable } from 'node:stream';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Knex } from 'knex';
import pino from 'pino';
import { Registry } from 'prom-client';
import { createMaintenanceActivities } from '../../src/activities/maintenance-jobs';
import { loadConfig } from '../../src/config';
import { createBillingRepository } from '../../src/db/billing-repository';
import { migrateLatest } from '../../src/db/migrate';
import { createSyncRunRepository } from '../../src/db/sync-run-repository';
import { createUsageExportActivities } from '../../src/export/export-activities';
import { exportDestinationsFromConfig } from '../../src/export/export-config';
import { createExportRepository, usageExportSnapshot } from '../../src/export/export-repository';
import { configuredDestinationNames, createExportSettingsRepository } from '../../src/export/export-settings';
import { developmentKeyring } from '../../src/codec/keyring';
import { createBillingMetrics, createMaintenanceMetrics } from '../../src/metrics';
import { usageExportReconcileWorkflow, usageExportWorkflow } from '../../src/workflows/maintenance';
import { ADMIN_UNAUTHORIZED, startAdminHarness, type AdminHarness } from '../api/admin-harness';
import { metricValue } from '../helpers/activity-deps';
import { lagoReceiver, openMeterReceiver, stripeReceiver, webhookReceiver, type Receiver } from '../helpers/export-receivers';
import { scratchDatabase, uniqueId } from '../helpers/services';
import { timeSkippingEnv, withWorker } from '../helpers/temporal';

const workflowsPath = require.resolve('../../src/workflows');
const WEBHOOK_SECRET = 'whsec_jobs_test_secret_never_logged_0123456789';
const LAGO_KEY = 'lago_key_never_logged_5f3a';
const STRIPE_KEY = 'sk_test_never_logged_77c1';

let env: TestWorkflowEnvironment;
let scratch: { db: Knex; drop: () => Promise<void> };
let h: AdminHarness;
let receivers: Receiver[];
let lago: Receiver;
const logLines: string[] = [];

beforeAll(async () => {
  env = await timeSkippingEnv();
  scratch = await scratchDatabase('usage_export_jobs');
  await migrateLatest(scratch.db);
  lago = await lagoReceiver();
  receivers = [await openMeterReceiver(), lago, await stripeReceiver(), await webhookReceiver(WEBHOOK_SECRET)];
  h = await startAdminHarness({ db: scratch.db, config: configured() });
}, 60_000);
afterAll(async () => {
  await Promise.all(receivers.map((r) => r.close()));
  await h.close();
  await scratch.drop();
  await env?.teardown();
});

function configured() {
  return loadConfig({
    ...process.env,
    USAGE_EXPORT_OPENMETER_URL: receivers[0]!.url,
    USAGE_EXPORT_LAGO_URL: lago.url,
    USAGE_EXPORT_LAGO_API_KEY: LAGO_KEY,
    USAGE_EXPORT_STRIPE_URL: receivers[2]!.url,
    USAGE_EXPORT_STRIPE_API_KEY: STRIPE_KEY,
    USAGE_EXPORT_WEBHOOK_URL: `${receivers[3]!.url}/usage`,
    USAGE_EXPORT_WEBHOOK_SECRET: WEBHOOK_SECRET,
    USAGE_EXPORT_BATCH_SIZE: '3',
  });
}

function activities(registry: Registry) {
  const config = configured();
  const log = pino({ level: 'trace' }, new Writable({ write: (chunk: Buffer, _e, cb) => void (logLines.push(chunk.toString('utf8')), cb()) }));
  const rejected = () => Promise.reject(new Error('not this test'));
  return createMaintenanceActivities({
    counterSync: { syncTenantQuotas: rejected, syncApiKeyBudgets: rejected },
    consistencyCheck: { run: rejected },
    sweepPendingReservations: rejected,
    drainOutbox: rejected,
    ...createUsageExportActivities({ config, repository: createExportRepository(scratch.db), settings: createExportSettingsRepository(scratch.db, developmentKeyring()), metrics: createBillingMetrics(registry), log }),
    syncRuns: createSyncRunRepository(scratch.db),
    maintenanceMetrics: createMaintenanceMetrics(registry),
    log,
  });
}

async function commitEntries(n: number): Promise<string[]> {
  const db = scratch.db;
  const ledger = createBillingRepository(db);
  const tenantId = uniqueId('t');
  await db('tenant_quota').insert({ tenant_id: tenantId, name: tenantId, quota_limit_micros: 1_000_000_000 });
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const requestId = uniqueId('req');
    // A one-step usage entry (M3.5): exported like a committed pending one.
    await ledger.recordTransaction({ requestId, tenantId, kind: 'usage', model: 'gpt-test', amountMicros: 2_000 + i, promptTokens: 3, completionTokens: 4, tokenSource: 'upstream' });
    ids.push(requestId);
  }
  return ids.sort();
}

describe('usage export maintenance jobs', () => {
  it('usageExportWorkflow delivers to every configured destination, one down does not fail the run; the reconciliation and admin endpoints report it', async () => {
    expect(exportDestinationsFromConfig(configured()).map((d) => d.name)).toEqual(['openmeter', 'lago', 'stripe', 'webhook']);
    const ids = await commitEntries(7);
    lago.down = true;
    const registry = new Registry();
    const since = new Date(Date.now() - 1000);

    const [run, reconciled] = await withWorker(env, { workflowsPath, activities: activities(registry) }, async (taskQueue) => {
      const summary = await env.client.workflow.execute(usageExportWorkflow, { taskQueue, workflowId: uniqueId('usage-export') });
      const day = (await scratch.db.first<{ d: string }>(scratch.db.raw(`to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS d`))).d;
      const results = await env.client.workflow.execute(usageExportReconcileWorkflow, { taskQueue, workflowId: uniqueId('usage-export-reconcile'), args: [{ day }] });
      return [summary, results] as const;
    });

    expect(Object.fromEntries(run.destinations.map((d) => [d.destination, [d.outcome, d.delivered]]))).toEqual({
      openmeter: ['caught_up', 7], lago: ['failed', 0], stripe: ['caught_up', 7], webhook: ['caught_up', 7],
    });
    for (const r of [receivers[0]!, receivers[2]!, receivers[3]!]) expect(r.store.size).toBe(7);
    expect([...receivers[3]!.store.keys()].sort()).toEqual(ids);
    // The run succeeded (lago's failure is lago's), and was recorded as one.
    const runs = await scratch.db('sync_run').where('job', 'export').andWhere('started_at', '>=', since).select('outcome', 'written', 'subjects');
    expect(runs).toEqual([{ outcome: 'ok', written: 21, subjects: 4 }]);
    expect(await metricValue(registry, 'billing_usage_export_sent_total', { destination: 'lago', result: 'failed' })).toBe(3);
    expect(reconciled.map((r) => [r.destination, r.missing])).toEqual([['openmeter', 0], ['lago', 7], ['stripe', 0], ['webhook', 0]]);

    // The gauges (every process reads them from PostgreSQL on scrape).
    const scrape = new Registry();
    createBillingMetrics(scrape, { usageExport: usageExportSnapshot(createExportRepository(scratch.db), ['openmeter', 'lago']) });
    expect(await metricValue(scrape, 'billing_usage_export_undelivered', { destination: 'lago' })).toBe(7);
    expect(await metricValue(scrape, 'billing_usage_export_undelivered', { destination: 'openmeter' })).toBe(0);
    expect(await metricValue(scrape, 'billing_usage_export_lag_seconds', { destination: 'lago' })).toBeGreaterThan(0);
    expect(await metricValue(scrape, 'billing_usage_export_reconciliation_differences', { destination: 'lago' })).toBe(7);
    expect(await metricValue(scrape, 'billing_usage_export_reconciliation_differences', { destination: 'openmeter' })).toBe(0);

    // Admin: the destination's state and the reconciliation, with the admin token only.
    const status = await h.admin('GET', '/admin/exports/lago');
    expect(status).toMatchObject({ status: 200, body: { destination: 'lago', undelivered: 7, held: 0, consecutive_failures: 1 } });
    expect((status.body as { last_error: string }).last_error).toContain('HTTP 503');
    const listed = await h.admin('GET', `/admin/exports/reconciliation?day=${reconciled[0]!.day}`);
    expect(listed.status).toBe(200);
    expect((listed.body as { data: Array<{ destination: string; missing: number; ledger_entries: number }> }).data.map((r) => [r.destination, r.ledger_entries, r.missing]).sort())
      .toEqual([['lago', 7, 7], ['openmeter', 7, 0], ['stripe', 7, 0], ['webhook', 7, 0]]);
    expect(await h.call('GET', '/admin/exports/lago')).toMatchObject({ status: 401, body: ADMIN_UNAUTHORIZED });
    // Nothing the API or the worker said holds a destination's credentials.
    const said = JSON.stringify(status.body) + JSON.stringify(listed.body) + logLines.join('');
    for (const secret of [WEBHOOK_SECRET, LAGO_KEY, STRIPE_KEY]) expect(said).not.toContain(secret);
    expect(logLines.join('')).toContain('usage export: destination failed');
  });

  it('answers bad admin input with a 400 or 404 in the OpenAI error shape', async () => {
    expect(await h.admin('GET', '/admin/exports/reconciliation?day=2026-13-40')).toMatchObject({ status: 400, body: { error: { type: 'invalid_request_error' } } });
    expect(await h.admin('GET', '/admin/exports/reconciliation?nope=1')).toMatchObject({ status: 400 });
    expect(await h.admin('GET', '/admin/exports/kafka')).toMatchObject({ status: 404, body: { error: { code: 'not_found' } } });
    expect(await h.admin('POST', '/admin/exports/stripe/held/1', { resolution: 'maybe' })).toMatchObject({ status: 400, body: { error: { param: 'resolution' } } });
    expect(await h.admin('POST', '/admin/exports/stripe/held/999999', { resolution: 'resend' })).toMatchObject({ status: 404 });
  });

  it('PUT /admin/exports/:destination replaces the environment: credential encrypted, never returned; a disabled row turns a destination off; DELETE restores it', async () => {
    const adminSecret = 'whsec_admin_set_secret_never_shown_9911';
    const adminHook = await webhookReceiver(adminSecret);
    try {
      const put = await h.admin('PUT', '/admin/exports/webhook', { url: `${adminHook.url}/admin-usage`, secret: adminSecret });
      expect(put).toMatchObject({ status: 200, body: { destination: 'webhook', configuration: { origin: 'admin', enabled: true, secret_set: true, settings: { url: `${adminHook.url}/admin-usage` } } } });
      expect(await h.admin('PUT', '/admin/exports/openmeter', { enabled: false, url: receivers[0]!.url })).toMatchObject({ status: 200 });
      const got = await h.admin('GET', '/admin/exports/webhook');
      expect(got).toMatchObject({ status: 200, body: { configuration: { origin: 'admin', secret_set: true } } });
      expect((await h.admin('GET', '/admin/exports/lago')).body).toMatchObject({ configuration: { origin: 'environment', settings: { metric_code: 'llm_usage' } } });
      expect(JSON.stringify(put.body) + JSON.stringify(got.body)).not.toContain(adminSecret);
      // At rest: AES-256-GCM under the codec's key, not the plaintext.
      const row = await scratch.db('usage_export_setting').where('destination', 'webhook').first<{ secret_key_id: string; secret_ciphertext: Buffer }>();
      expect(row.secret_key_id).toBe(developmentKeyring().activeKeyId);
      expect(row.secret_ciphertext.toString('latin1')).not.toContain(adminSecret);

      const ids = await commitEntries(2);
      const openMeterBefore = receivers[0]!.store.size;
      const envHookBefore = receivers[3]!.store.size;
      const run = await withWorker(env, { workflowsPath, activities: activities(new Registry()) }, (taskQueue) =>
        env.client.workflow.execute(usageExportWorkflow, { taskQueue, workflowId: uniqueId('usage-export') }));
      // openmeter is off (admin row disabled); the webhook goes to the admin URL, signed with the admin secret.
      expect(run.destinations.map((d) => d.destination)).toEqual(['lago', 'stripe', 'webhook']);
      expect(await configuredDestinationNames(configured(), createExportSettingsRepository(scratch.db, developmentKeyring()))).toEqual(['lago', 'stripe', 'webhook']);
      expect(receivers[0]!.store.size).toBe(openMeterBefore);
      expect(receivers[3]!.store.size).toBe(envHookBefore);
      expect([...adminHook.store.keys()].filter((id) => ids.includes(id)).sort()).toEqual(ids);
      expect(logLines.join('')).not.toContain(adminSecret);

      expect(await h.admin('DELETE', '/admin/exports/openmeter')).toMatchObject({ status: 200, body: { deleted: true } });
      expect((await h.admin('GET', '/admin/exports/openmeter')).body).toMatchObject({ configuration: { origin: 'environment' } });
      expect(await h.admin('DELETE', '/admin/exports/openmeter')).toMatchObject({ status: 404 });
    } finally {
      await adminHook.close();
      await scratch.db('usage_export_setting').del();
    }
  });

  it('refuses a bad PUT with a 400 naming the field, and changes nothing', async () => {
    expect(await h.admin('PUT', '/admin/exports/stripe', { event_name: 'tokens' })).toMatchObject({ status: 400, body: { error: { param: 'api_key' } } });
    expect(await h.admin('PUT', '/admin/exports/webhook', { url: 'ftp://hook.local/x', secret: 'whsec_1' })).toMatchObject({ status: 400, body: { error: { param: 'url' } } });
    expect(await h.admin('PUT', '/admin/exports/webhook', { url: 'https://user:pw@hook.local/x', secret: 'whsec_1' })).toMatchObject({ status: 400, body: { error: { param: 'url' } } });
    expect(await h.admin('PUT', '/admin/exports/lago', { url: 'https://lago.local', id_field: 'customer' })).toMatchObject({ status: 400, body: { error: { param: 'id_field' } } });
    expect(await h.admin('PUT', '/admin/exports/lago', { url: 'https://lago.local', surprise: 1 })).toMatchObject({ status: 400 });
    expect(await h.admin('PUT', '/admin/exports/kafka', { url: 'https://k.local' })).toMatchObject({ status: 404 });
    expect(await scratch.db('usage_export_setting').count<Array<{ count: string }>>('* as count')).toEqual([{ count: '0' }]);
  });
});
