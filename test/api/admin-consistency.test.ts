/**
 * GET /admin/consistency/latest (M4.3) and the consistency gauges (M13), on a database of
 * this file's own, so "no run yet" and a check over every tenant are this file's alone:
 * 404 in the OpenAI error shape before the first run, the admin token required, then the
 * latest run in the contract's shape.
 */
import type { Knex } from 'knex';
import { Registry } from 'prom-client';
import { createBillingStep } from '../../src/activities/billing-step';
import { createQuotaCheckStep } from '../../src/activities/quota-check-step';
import { createConsistencyReportRepository } from '../../src/consistency/report-repository';
import { migrateLatest } from '../../src/db/migrate';
import { createBillingMetrics } from '../../src/metrics';
import { CacheKeys } from '../../src/redis/cache-keys';
import { billedInput, metricValue, stepDeps } from '../helpers/activity-deps';
import { consistencyHarness } from '../helpers/consistency';
import { scratchDatabase } from '../helpers/services';
import { ADMIN_UNAUTHORIZED, createKey, createTenant, startAdminHarness, type AdminHarness } from './admin-harness';

let scratch: { db: Knex; drop: () => Promise<void> };
let h: AdminHarness;

beforeAll(async () => {
  scratch = await scratchDatabase('consistency');
  await migrateLatest(scratch.db);
  h = await startAdminHarness({ db: scratch.db });
}, 60_000);
afterAll(async () => {
  await h.close();
  await scratch.drop();
});

describe('GET /admin/consistency/latest (M4.3)', () => {
  it('answers 404 in the OpenAI error shape before the first run, and 401 without the admin token', async () => {
    expect(await h.admin('GET', '/admin/consistency/latest')).toMatchObject({
      status: 404,
      body: { error: { message: 'consistency report not found', type: 'invalid_request_error', code: 'not_found' } },
    });
    expect(await h.call('GET', '/admin/consistency/latest')).toMatchObject({ status: 401, body: ADMIN_UNAUTHORIZED });
  });

  it('serves the latest run in the contract shape, and the gauges export its figures', async () => {
    // One tenant with one key, one billed request (20 prompt tokens, 16 completion tokens: 210 micros), then drift.
    const tenantId = await createTenant(h, 1_000_000);
    const { id: apiKeyId } = await createKey(h, tenantId, 500_000);
    const deps = stepDeps(h.testRedis, scratch.db);
    const input = billedInput(tenantId, apiKeyId, { promptTokens: 20, maxOutputTokens: 100, reservedMicros: 1_050 });
    expect(await createQuotaCheckStep(deps)(input)).toMatchObject({ admitted: true });
    await createBillingStep(deps)(input, { status: 'completed', promptTokens: 20, completionTokens: 16, tokenSource: 'upstream', channel: 'default' });
    await h.testRedis.hincrby(CacheKeys.tenantQuota(tenantId), 'used_micros', 5_000);

    const check = consistencyHarness(h.testRedis, scratch.db);
    const summary = await check.check.run(); // every tenant of this database
    const res = await h.admin('GET', '/admin/consistency/latest');

    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      id: summary.reportId,
      status: 'drift',
      tenants_checked: 1,
      keys_checked: 1,
      tenant_drift_micros: 5_000,
      apikey_drift_micros: 0,
      drifted: [{
        kind: 'tenant', tenant_id: tenantId, redis_micros: 5_210, ledger_micros: 210, synced_micros: 0, synced_at: null,
        drift_micros: 5_000, synced_drift_micros: null, healed: true, outcome: 'healed',
      }],
      healed: true,
      scope_tenant_ids: null,
      heals: 1,
      alerted: true,
      error: null,
    });
    expect(res.body.drifted[0]).not.toHaveProperty('api_key_id');
    const finishedAt = Date.parse(String(res.body.finished_at));
    expect(Date.parse(String(res.body.started_at))).toBeLessThanOrEqual(finishedAt);
    expect(await h.testRedis.hget(CacheKeys.tenantQuota(tenantId), 'used_micros')).toBe('210');

    // The run's own gauges (a run over every tenant sets them) ...
    expect(await metricValue(check.registry, 'billing_consistency_drift_micros', { kind: 'tenant' })).toBe(5_000);
    expect(await metricValue(check.registry, 'billing_consistency_drifted_subjects', { kind: 'tenant' })).toBe(1);
    expect(await metricValue(check.registry, 'billing_consistency_drifted_subjects', { kind: 'api_key' })).toBe(0);
    // ... and every replica's, read from the latest report on scrape.
    const replica = new Registry();
    createBillingMetrics(replica, { consistency: () => createConsistencyReportRepository(scratch.db).latestCompleted() });
    expect(await metricValue(replica, 'billing_consistency_drift_micros', { kind: 'tenant' })).toBe(5_000);
    expect(await metricValue(replica, 'billing_consistency_drift_threshold_micros')).toBe(0);
    expect(await metricValue(replica, 'billing_consistency_busy_subjects')).toBe(0);
    expect(await metricValue(replica, 'billing_consistency_last_run_timestamp_seconds')).toBe(finishedAt / 1000);

    // A later clean run is the latest.
    const clean = await check.check.run();
    expect((await h.admin('GET', '/admin/consistency/latest')).body).toMatchObject({ id: clean.reportId, status: 'ok', drifted: [], healed: false, tenant_drift_micros: 0 });
    expect(await metricValue(replica, 'billing_consistency_drift_micros', { kind: 'tenant' })).toBe(0);
  });
});
