/**
 * Spend reports and a key's own balance on the real stack (issue 12, items 2 and 3):
 * requests billed through the gateway, then read back grouped by day, model and key, as
 * JSON and CSV, and through OpenAI's legacy dashboard endpoints with the key itself. Every
 * expected figure is the ledger's own, summed here with SQL independent of the report code;
 * voided requests and pending reservations are not spend; a key never sees another tenant.
 */
import type { Knex } from 'knex';
import { chat, startTestApp, TEST_MODEL, TEST_PRICE, type TestApp } from '../helpers/app';
import { settled } from '../helpers/ledger';
import { testDb, uniqueId } from '../helpers/services';

const OTHER_MODEL = 'gpt-4o';
const ask = (model: string, text: string) => ({ model, messages: [{ role: 'user' as const, content: text }] });

interface UsageBody { object: string; group_by: string; data: Array<{ group: string; requests: number; prompt_tokens: number; completion_tokens: number; cost_micros: number }> }
interface ErrorBody { error: { message: string; type: string; code: string | null; param?: string | null } }

describe('spend reports and the key\'s own balance', () => {
  let app: TestApp;
  let db: Knex;
  let tenantId: string;
  let budgetKey: { id: string; key: string };
  let openKey: { id: string; key: string };
  let stranger: { tenantId: string; key: string };

  /** Committed usage of a subject from the ledger, grouped by a column: what every report must equal. */
  async function ledgerBy(column: 'model' | 'api_key_id', where: Record<string, string>): Promise<Record<string, { requests: number; cost: number; prompt: number; completion: number }>> {
    const rows = await db('billing_transaction').where({ ...where, status: 'committed', kind: 'usage' }).groupBy(column)
      .select(column, db.raw('count(*)::int AS requests'), db.raw('sum(amount_micros)::text AS cost'), db.raw('sum(prompt_tokens)::int AS prompt'), db.raw('sum(completion_tokens)::int AS completion'));
    return Object.fromEntries(rows.map((r: Record<string, string | number>) => [String(r[column]), { requests: Number(r.requests), cost: Number(r.cost), prompt: Number(r.prompt), completion: Number(r.completion) }]));
  }

  beforeAll(async () => {
    app = await startTestApp();
    db = testDb();
    expect((await app.admin('PUT', `/admin/models/${OTHER_MODEL}`, { ...TEST_PRICE, input_price_micros_per_mtok: 5_000_000 })).status).toBe(200);
    tenantId = uniqueId('usage');
    expect((await app.admin('POST', '/admin/tenants', { id: tenantId, name: tenantId, quota_limit_micros: 50_000_000 })).status).toBe(201);
    budgetKey = (await app.admin<{ id: string; key: string }>('POST', `/admin/tenants/${tenantId}/api-keys`, { name: 'budgeted', budget_micros: 3_000_000 })).body;
    openKey = (await app.admin<{ id: string; key: string }>('POST', `/admin/tenants/${tenantId}/api-keys`, { name: 'open' })).body;
    const other = await app.tenant();
    stranger = { tenantId: other.tenantId, key: other.key };

    for (let i = 0; i < 3; i++) expect((await chat(app, budgetKey.key, ask(TEST_MODEL, `budgeted ${i}`))).status).toBe(200);
    for (let i = 0; i < 2; i++) expect((await chat(app, openKey.key, ask(OTHER_MODEL, `open ${i} with a longer prompt`))).status).toBe(200);
    expect((await chat(app, openKey.key, ask(TEST_MODEL, 'one more [mock:tokens=9]'))).status).toBe(200);
    // Voided: the upstream fails before any output; it costs nothing and is not spend.
    expect((await chat(app, openKey.key, ask(TEST_MODEL, 'fails [mock:fail=before]'))).status).toBe(502);
    await settled(db, tenantId);
  }, 120_000);
  afterAll(async () => {
    await app?.stop();
    await db?.destroy();
  });

  it('groups a tenant\'s committed spend by model and by key, exactly as the ledger sums it', async () => {
    const byModel = await app.admin<UsageBody>('GET', `/admin/tenants/${tenantId}/usage?group_by=model`);
    expect(byModel.status).toBe(200);
    const ledgerModels = await ledgerBy('model', { tenant_id: tenantId });
    expect(byModel.body.data.map((r) => r.group)).toEqual([OTHER_MODEL, TEST_MODEL]);
    for (const row of byModel.body.data) {
      expect(row).toEqual({ group: row.group, requests: ledgerModels[row.group]!.requests, prompt_tokens: ledgerModels[row.group]!.prompt, completion_tokens: ledgerModels[row.group]!.completion, cost_micros: ledgerModels[row.group]!.cost });
    }
    expect(byModel.body.data.find((r) => r.group === TEST_MODEL)!.requests).toBe(4); // the voided one is not there

    const byKey = await app.admin<UsageBody>('GET', `/admin/tenants/${tenantId}/usage?group_by=api_key`);
    const ledgerKeys = await ledgerBy('api_key_id', { tenant_id: tenantId });
    expect(Object.fromEntries(byKey.body.data.map((r) => [r.group, r.cost_micros]))).toEqual(Object.fromEntries(Object.entries(ledgerKeys).map(([k, v]) => [k, v.cost])));
    expect(byKey.body.data.map((r) => r.requests).sort()).toEqual([3, 3]);
  });

  it('groups by UTC day by default over the current month, and honours from (inclusive) and to (exclusive)', async () => {
    const byDay = await app.admin<UsageBody>('GET', `/admin/tenants/${tenantId}/usage`);
    const today = new Date().toISOString().slice(0, 10);
    const total = Object.values(await ledgerBy('model', { tenant_id: tenantId })).reduce((sum, m) => sum + m.cost, 0);
    expect(byDay.body.group_by).toBe('day');
    expect(byDay.body.data).toEqual([expect.objectContaining({ group: today, requests: 6, cost_micros: total })]);

    const first = await db('billing_transaction').where({ tenant_id: tenantId, status: 'committed' }).min({ at: 'committed_at' }).first<{ at: Date }>();
    const before = await app.admin<UsageBody>('GET', `/admin/tenants/${tenantId}/usage?from=${new Date(first.at.getTime() - 86_400_000).toISOString().slice(0, 10)}&to=${encodeURIComponent(first.at.toISOString())}`);
    expect(before.body.data).toEqual([]);
    const from = await app.admin<UsageBody>('GET', `/admin/tenants/${tenantId}/usage?from=${encodeURIComponent(first.at.toISOString())}&group_by=model`);
    expect(from.body.data.reduce((n, r) => n + r.requests, 0)).toBe(6);
  });

  it('answers CSV with the same figures when asked with Accept: text/csv', async () => {
    const json = await app.admin<UsageBody>('GET', `/admin/tenants/${tenantId}/usage?group_by=model`);
    const res = await fetch(`${app.url}/admin/tenants/${tenantId}/usage?group_by=model`, { headers: { authorization: `Bearer test-admin-token-0123456789`, accept: 'text/csv' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/csv/);
    const lines = (await res.text()).trimEnd().split('\r\n');
    expect(lines[0]).toBe('group,requests,prompt_tokens,completion_tokens,cost_micros');
    expect(lines.slice(1)).toEqual(json.body.data.map((r) => [r.group, r.requests, r.prompt_tokens, r.completion_tokens, r.cost_micros].join(',')));
  });

  it('reports one key\'s spend under /admin/api-keys/:id/usage', async () => {
    const res = await app.admin<UsageBody>('GET', `/admin/api-keys/${budgetKey.id}/usage?group_by=model`);
    const ledger = await ledgerBy('model', { api_key_id: budgetKey.id });
    expect(res.body.data).toEqual([{ group: TEST_MODEL, requests: 3, prompt_tokens: ledger[TEST_MODEL]!.prompt, completion_tokens: ledger[TEST_MODEL]!.completion, cost_micros: ledger[TEST_MODEL]!.cost }]);
  });

  it('refuses bad queries with 400 in the OpenAI error shape, unknown subjects with 404, and needs the admin token', async () => {
    for (const query of ['group_by=week', 'from=2026-13-01', 'from=2026-12-05&to=2026-12-01', 'from=2020-01-01&to=2026-01-01', 'grouping=day', 'from=yesterday']) {
      const res = await app.admin<ErrorBody>('GET', `/admin/tenants/${tenantId}/usage?${query}`);
      expect({ query, status: res.status, type: res.body.error.type }).toEqual({ query, status: 400, type: 'invalid_request_error' });
    }
    expect((await app.admin('GET', `/admin/tenants/${uniqueId('nobody')}/usage`)).status).toBe(404);
    expect((await app.admin('GET', '/admin/api-keys/key_nope/usage')).status).toBe(404);
    expect((await fetch(`${app.url}/admin/tenants/${tenantId}/usage`)).status).toBe(401);
  });

  async function dashboard<T>(key: string, path: string): Promise<{ status: number; body: T }> {
    const res = await fetch(`${app.url}${path}`, { headers: { authorization: `Bearer ${key}` } });
    return { status: res.status, body: (await res.json()) as T };
  }

  interface Subscription { object: string; hard_limit_usd: number; soft_limit_usd: number; system_hard_limit_usd: number; has_payment_method: boolean; access_until: number; account_scope: string; hard_limit_micros: number; used_micros: number; remaining_micros: number }
  interface LegacyUsage { object: string; total_usage: number; total_usage_micros: number; daily_costs: Array<{ timestamp: number; line_items: Array<{ name: string; cost: number; cost_micros: number }> }> }

  it('a key with a budget sees that budget and its own spend in OpenAI\'s legacy dashboard shapes', async () => {
    const sub = await dashboard<Subscription>(budgetKey.key, '/v1/dashboard/billing/subscription');
    const spent = Object.values(await ledgerBy('model', { api_key_id: budgetKey.id })).reduce((n, m) => n + m.cost, 0);
    expect(sub.status).toBe(200);
    expect(sub.body).toEqual({
      object: 'billing_subscription', has_payment_method: true, soft_limit_usd: 3, hard_limit_usd: 3, system_hard_limit_usd: 3, access_until: 0,
      account_scope: 'api_key', hard_limit_micros: 3_000_000, used_micros: spent, remaining_micros: 3_000_000 - spent,
    });

    const today = new Date().toISOString().slice(0, 10);
    const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
    const usage = await dashboard<LegacyUsage>(budgetKey.key, `/v1/dashboard/billing/usage?start_date=${today}&end_date=${tomorrow}`);
    expect(usage.body).toEqual({
      object: 'list',
      total_usage: spent / 10_000,
      total_usage_micros: spent,
      daily_costs: [{ timestamp: Date.parse(`${today}T00:00:00Z`) / 1000, line_items: [{ name: TEST_MODEL, cost: spent / 10_000, cost_micros: spent }] }],
    });
  });

  it('a key without a budget sees its tenant\'s quota and the tenant\'s spend; another tenant\'s key sees none of it', async () => {
    const tenantSpend = Object.values(await ledgerBy('model', { tenant_id: tenantId })).reduce((n, m) => n + m.cost, 0);
    const sub = await dashboard<Subscription>(openKey.key, '/v1/dashboard/billing/subscription');
    expect(sub.body).toMatchObject({ account_scope: 'tenant', hard_limit_usd: 50, hard_limit_micros: 50_000_000, used_micros: tenantSpend, remaining_micros: 50_000_000 - tenantSpend });
    const today = new Date().toISOString().slice(0, 10);
    const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
    const usage = await dashboard<LegacyUsage>(openKey.key, `/v1/dashboard/billing/usage?start_date=${today}&end_date=${tomorrow}`);
    expect(usage.body.total_usage_micros).toBe(tenantSpend);
    expect(usage.body.daily_costs[0]!.line_items.map((i) => i.name)).toEqual([OTHER_MODEL, TEST_MODEL]);

    const theirs = await dashboard<LegacyUsage>(stranger.key, `/v1/dashboard/billing/usage?start_date=${today}&end_date=${tomorrow}`);
    expect(theirs.body).toEqual({ object: 'list', total_usage: 0, total_usage_micros: 0, daily_costs: [] });
    expect((await dashboard<Subscription>(stranger.key, '/v1/dashboard/billing/subscription')).body).toMatchObject({ used_micros: 0, hard_limit_micros: 10_000_000 });
  });

  it('the dashboard needs a valid key and real dates', async () => {
    expect((await dashboard<ErrorBody>('sk-not-a-key', '/v1/dashboard/billing/subscription')).status).toBe(401);
    const missing = await dashboard<ErrorBody>(budgetKey.key, '/v1/dashboard/billing/usage');
    expect(missing.status).toBe(400);
    expect((await dashboard<ErrorBody>(budgetKey.key, '/v1/dashboard/billing/usage?start_date=2026-01-01&end_date=2026-12-01')).status).toBe(400);
    const revoked = (await app.admin<{ id: string; key: string }>('POST', `/admin/tenants/${tenantId}/api-keys`, { name: 'to revoke' })).body;
    expect((await app.admin('DELETE', `/admin/api-keys/${revoked.id}`)).status).toBe(200);
    expect((await dashboard<ErrorBody>(revoked.key, '/v1/dashboard/billing/subscription')).status).toBe(401);
  });
});
