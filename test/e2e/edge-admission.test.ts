/**
 * Admission at the edge on the real stack (docs/architecture.md "The lifecycle"; M2, M12):
 * a tenant short of quota or a key short of budget is refused before any workflow
 * starts and nothing is billed; a top-up lets the next request through at once; the
 * process's in-flight bound sheds overload with a 503 while readiness stays true.
 */
import type { Knex } from 'knex';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { chat, startTestApp, TEST_MODEL, type TestApp } from '../helpers/app';
import { settled } from '../helpers/ledger';
import { testDb } from '../helpers/services';
import { devServerEnv } from '../helpers/temporal';

const ask = (text = 'hello') => ({ model: TEST_MODEL, messages: [{ role: 'user', content: text }] });

/** Workflows the dev server's visibility lists for a tenant (search attribute TenantId). */
async function workflowsOf(env: TestWorkflowEnvironment, tenantId: string): Promise<number> {
  return (await env.client.workflow.count(`TenantId = "${tenantId}"`)).count;
}

/** Polls visibility until it lists `expected` workflows of the tenant (it lags writes by a moment). */
async function untilListed(env: TestWorkflowEnvironment, tenantId: string, expected: number): Promise<number> {
  const deadline = Date.now() + 10_000;
  let count = await workflowsOf(env, tenantId);
  while (count < expected && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    count = await workflowsOf(env, tenantId);
  }
  return count;
}

describe('refusals at the edge', () => {
  let app: TestApp;
  let db: Knex;
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    app = await startTestApp();
    db = testDb();
    env = await devServerEnv();
  }, 60_000);
  afterAll(async () => {
    await app?.stop();
    await db?.destroy();
    await env?.teardown();
  });

  it('refuses a tenant without quota at once (429 insufficient_quota), starts no workflow, bills nothing; a top-up admits the next request', async () => {
    const t = await app.tenant({ quotaMicros: 0 });
    const refusals = await Promise.all(Array.from({ length: 20 }, () => chat(app, t.key, ask())));
    for (const r of refusals) {
      expect(r.status).toBe(429);
      expect((r.json() as { error: { code: string } }).error.code).toBe('insufficient_quota');
    }
    expect(await db('billing_transaction').where({ tenant_id: t.tenantId })).toEqual([]);

    expect((await app.admin('POST', `/admin/tenants/${t.tenantId}/topups`, { amount_micros: 1_000_000, reference: 'edge' })).status).toBe(201);
    const admitted = await chat(app, t.key, ask());
    expect(admitted.status).toBe(200);

    // Visibility lists the one admitted request, so it would have listed refused ones too: there were none.
    expect(await untilListed(env, t.tenantId, 1)).toBe(1);
    await settled(db, t.tenantId);
    const rows = await db('billing_transaction').where({ tenant_id: t.tenantId, kind: 'usage' });
    expect(rows.map((r: { status: string }) => r.status)).toEqual(['committed']);
  });

  it('refuses a key short of budget (429 budget_exceeded) without a workflow', async () => {
    const t = await app.tenant({ quotaMicros: 10_000_000, budgetMicros: 1 });
    const res = await chat(app, t.key, ask());
    expect(res.status).toBe(429);
    expect((res.json() as { error: { code: string } }).error.code).toBe('budget_exceeded');
    expect(await db('billing_transaction').where({ tenant_id: t.tenantId })).toEqual([]);
    // A positive control on the same tenant: an unlimited key is admitted and listed.
    const other = await app.admin<{ key: string }>('POST', `/admin/tenants/${t.tenantId}/api-keys`, { name: 'unlimited' });
    expect((await chat(app, other.body.key, ask())).status).toBe(200);
    expect(await untilListed(env, t.tenantId, 1)).toBe(1);
  });

  it('counts edge refusals by reason on /metrics', async () => {
    const t = await app.tenant({ quotaMicros: 0 });
    await chat(app, t.key, ask());
    const metrics = await (await fetch(`${app.url}/metrics`)).text();
    expect(metrics).toMatch(/^billing_edge_refusals_total\{reason="insufficient_quota"\} [1-9]\d*$/m);
  });
});

describe('overload answered, not queued (MAX_INFLIGHT_REQUESTS)', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startTestApp({ env: { MAX_INFLIGHT_REQUESTS: '2' } });
  }, 60_000);
  afterAll(async () => {
    await app?.stop();
  });

  it('answers 503 with Retry-After at once past the bound, stays ready, and counts the shed request', async () => {
    const t = await app.tenant();
    // Two slow requests hold both slots.
    const slow = [0, 1].map(() => chat(app, t.key, ask('slow [mock:latency=100] [mock:tokens=20]')));
    await new Promise((r) => setTimeout(r, 500));
    const started = Date.now();
    const shed = await chat(app, t.key, ask());
    const elapsedMs = Date.now() - started;

    expect(shed.status).toBe(503);
    expect(shed.headers.get('retry-after')).toBe('1');
    expect(elapsedMs).toBeLessThan(1_000);
    expect((await fetch(`${app.url}/readyz`)).status).toBe(200);
    expect((await Promise.all(slow)).map((r) => r.status)).toEqual([200, 200]);
    const metrics = await (await fetch(`${app.url}/metrics`)).text();
    expect(metrics).toMatch(/^billing_shed_requests_total 1$/m);
    expect(metrics).toMatch(/^billing_inflight_limit 2$/m);
    expect(metrics).toMatch(/^billing_inflight_requests 0$/m);
    // Slots come back: the next request passes.
    expect((await chat(app, t.key, ask())).status).toBe(200);
  });
});
