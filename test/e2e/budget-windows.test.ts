/**
 * Budget windows through the whole stack (issue 12): HTTP -> edge -> billed-request
 * workflow on the dev server -> worker activities. A key's window that cannot take the
 * reservation is refused by the workflow's reservation (429 budget_exceeded; the edge
 * pre-checks only the lifetime figures), nothing is billed; a key with room is billed
 * into today's window in its zone, which the ledger row names and GET reports.
 */
import type { Knex } from 'knex';
import { windowBounds } from '../../src/billing/budget-window-period';
import { budgetWindowId } from '../../src/services/budget-windows';
import { chat, startTestApp, TEST_MODEL, type TestApp } from '../helpers/app';
import { settled } from '../helpers/ledger';
import { testDb } from '../helpers/services';

const ask = { model: TEST_MODEL, messages: [{ role: 'user', content: 'hello' }] };

describe('budget windows end to end', () => {
  let app: TestApp;
  let db: Knex;

  beforeAll(async () => {
    app = await startTestApp();
    db = testDb();
  }, 60_000);
  afterAll(async () => {
    await app?.stop();
    await db?.destroy();
  });

  it('a daily window of 1 micro refuses (429 budget_exceeded) and bills nothing; a roomy one bills into today in Asia/Tokyo', async () => {
    const t = await app.tenant({ quotaMicros: 10_000_000 });
    expect((await app.admin('PATCH', `/admin/api-keys/${t.apiKeyId}`, { budget_period: 'daily', budget_limit_micros: 1 })).status).toBe(200);
    const refused = await chat(app, t.key, ask);
    expect(refused.status).toBe(429);
    expect((refused.json() as { error: { code: string } }).error.code).toBe('budget_exceeded');
    expect(await db('billing_transaction').where({ tenant_id: t.tenantId })).toEqual([]);

    expect((await app.admin('PATCH', `/admin/api-keys/${t.apiKeyId}`, { budget_period: 'daily', budget_limit_micros: 1_000_000, budget_timezone: 'Asia/Tokyo' })).status).toBe(200);
    const admitted = await chat(app, t.key, ask);
    expect(admitted.status).toBe(200);
    await settled(db, t.tenantId);

    const rows = await db('billing_transaction').where({ tenant_id: t.tenantId, kind: 'usage' }).select('status', 'amount_micros', 'budget_windows');
    expect(rows).toHaveLength(1);
    const day = windowBounds('daily', 'Asia/Tokyo', Date.now());
    expect(rows[0]).toMatchObject({ status: 'committed', budget_windows: [budgetWindowId('api_key', t.apiKeyId, 'daily', day.startMs)] });
    const cost = Number(rows[0].amount_micros);
    expect(cost).toBeGreaterThan(0);

    const view = await app.admin<{ budget_windows: Array<Record<string, unknown>> }>('GET', `/admin/api-keys/${t.apiKeyId}`);
    expect(view.body.budget_windows).toEqual([
      { period: 'daily', limit_micros: 1_000_000, window_start: new Date(day.startMs).toISOString(), window_end: new Date(day.endMs).toISOString(), used_micros: cost, remaining_micros: 1_000_000 - cost },
    ]);
  }, 60_000);
});
