/**
 * Budget alerts through the whole stack (M13, M5): a tenant created over the admin API
 * with a webhook URL, billed requests through the gateway, and the worker as
 * src/roles wires it (its Temporal client on the worker's connection, the dispatcher,
 * the budgetAlert workflow and its activities). The receiver gets the 80 % alert once,
 * signed with the secret shown at creation; the alert's workflow is findable by tenant.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { verifyAlertSignature } from '../../src/alerts/signature';
import { SearchKeys } from '../../src/workflows/search-attributes';
import type { Knex } from 'knex';
import { chat, startTestApp, TEST_MODEL, type TestApp } from '../helpers/app';
import { settled } from '../helpers/ledger';
import { testDb, uniqueId } from '../helpers/services';
import { devServerEnv } from '../helpers/temporal';

interface Received { alertId: string; signature: string | undefined; body: string }

let app: TestApp;
let db: Knex;
let env: TestWorkflowEnvironment;
let receiver: http.Server;
let hookUrl: string;
const received: Received[] = [];

beforeAll(async () => {
  receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ alertId: String(req.headers['x-billing-alert-id']), signature: req.headers['x-billing-signature'] as string | undefined, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', () => resolve()));
  hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/billing`;
  app = await startTestApp({ env: { ALERT_RETRY_INITIAL_SECONDS: '1', ALERT_SETTINGS_CACHE_SECONDS: '0' } });
  env = await devServerEnv();
  db = testDb();
}, 90_000);

afterAll(async () => {
  await app?.stop();
  await env?.teardown();
  await db?.destroy();
  await new Promise<void>((resolve) => receiver.close(() => resolve()));
});

it('requests that use 80 % of the quota raise one signed alert, delivered by the worker as deployed', async () => {
  const tenantId = uniqueId('tenant');
  const created = await app.admin<{ alert_webhook_secret: string; alert_thresholds_percent: number[] }>('POST', '/admin/tenants', {
    id: tenantId, name: tenantId, quota_limit_micros: 2_000, alert_webhook_url: hookUrl,
  });
  expect(created.status).toBe(201);
  expect(created.body.alert_thresholds_percent).toEqual([80, 100]);
  const secret = created.body.alert_webhook_secret;
  const key = await app.admin<{ key: string }>('POST', `/admin/tenants/${tenantId}/api-keys`, { name: 'k' });

  // Each request costs a little over 100 micros (prompt + 48 completion tokens at 2 micros): spend until 80 % is passed.
  let used = 0;
  for (let i = 0; i < 30 && used < 1_600; i += 1) {
    const res = await chat(app, key.body.key, { model: TEST_MODEL, messages: [{ role: 'user', content: `hello [mock:tokens=48] ${i}` }] });
    expect(res.status).toBe(200);
    // Settlement runs after the response: read `used` once it is settled (no reservation in it).
    await settled(db, tenantId);
    used = (await app.admin<{ used_micros: number }>('GET', `/admin/tenants/${tenantId}`)).body.used_micros;
  }
  expect(used).toBeGreaterThanOrEqual(1_600);

  const alertId = `budget-alert:tenant:${tenantId}:80:1`;
  const deadline = Date.now() + 20_000;
  while (!received.some((r) => r.alertId === alertId) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  await env.client.workflow.getHandle(alertId).result();

  const mine = received.filter((r) => r.alertId.includes(tenantId));
  expect(mine.map((r) => r.alertId)).toEqual([alertId]);
  expect(verifyAlertSignature(secret, mine[0]!.signature, mine[0]!.body, { toleranceSeconds: 60 })).toMatchObject({ valid: true });
  const body = JSON.parse(mine[0]!.body) as { tenant_id: string; threshold_percent: number; used_micros: number; limit_micros: number };
  expect(body).toMatchObject({ tenant_id: tenantId, threshold_percent: 80, limit_micros: 2_000 });
  expect(body.used_micros * 100).toBeGreaterThanOrEqual(80 * 2_000);
  expect(body.used_micros).toBeLessThanOrEqual(used);
  const described = await env.client.workflow.getHandle(alertId).describe();
  expect(described.typedSearchAttributes.get(SearchKeys.tenantId)).toBe(tenantId);
});
