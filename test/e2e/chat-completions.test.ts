/**
 * End to end over real HTTP (M10.2): the official `openai` client against the
 * gateway, the gateway against the mock upstream, real Temporal, Redis and
 * PostgreSQL. Every request is billed exactly its cost, to the micro.
 */
import OpenAI from 'openai';
import { chat, startTestApp, TEST_MODEL, TEST_PRICE, type TestApp } from '../helpers/app';
import { testDb } from '../helpers/services';
import { settled } from '../helpers/ledger';
import type { Knex } from 'knex';

/** ceil((prompt * in + completion * out) / 1e6): the documented pricing rule. */
const cost = (prompt: number, completion: number): number =>
  Math.ceil((prompt * TEST_PRICE.input_price_micros_per_mtok + completion * TEST_PRICE.output_price_micros_per_mtok) / 1_000_000);

interface LedgerRow { request_id: string; status: string; amount_micros: string; reserved_micros: string; prompt_tokens: number; completion_tokens: number; token_source: string; admission_path: string }

describe('POST /v1/chat/completions end to end (M2, M3, M6)', () => {
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

  /** The tenant's usage rows once settlement (which runs after the response) has finished. */
  const ledger = async (tenantId: string): Promise<LedgerRow[]> => {
    await settled(db, tenantId);
    return db('billing_transaction').where({ tenant_id: tenantId, kind: 'usage' }).orderBy('id');
  };

  async function tenantView(tenantId: string): Promise<{ used_micros: number; remaining_micros: number; quota_limit_micros: number }> {
    return (await app.admin<{ used_micros: number; remaining_micros: number; quota_limit_micros: number }>('GET', `/admin/tenants/${tenantId}`)).body;
  }

  it('bills a non-streamed completion exactly once, from the upstream usage', async () => {
    const t = await app.tenant({ quotaMicros: 1_000_000 });
    const client = new OpenAI({ baseURL: `${app.url}/v1`, apiKey: t.key, maxRetries: 0 });
    const { data: completion, response } = await client.chat.completions
      .create({ model: TEST_MODEL, messages: [{ role: 'user', content: 'What is a ledger?' }] })
      .withResponse();
    expect(response.headers.get('x-request-id')).toMatch(/^req_[0-9a-f]{32}$/);
    expect(completion.choices[0]!.message.content).toEqual(expect.any(String));
    const usage = completion.usage!;
    expect(usage.completion_tokens).toBe(16);

    const rows = await ledger(t.tenantId);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      request_id: response.headers.get('x-request-id'),
      status: 'committed',
      amount_micros: String(cost(usage.prompt_tokens, usage.completion_tokens)),
      prompt_tokens: usage.prompt_tokens,
      completion_tokens: usage.completion_tokens,
      token_source: 'upstream',
      admission_path: 'redis',
    });
    const view = await tenantView(t.tenantId);
    expect(view.used_micros).toBe(cost(usage.prompt_tokens, usage.completion_tokens));
    expect(view.remaining_micros).toBe(1_000_000 - view.used_micros);
  });

  it('streams SSE ending with [DONE], usage only when include_usage asks, and bills once', async () => {
    const t = await app.tenant();
    const client = new OpenAI({ baseURL: `${app.url}/v1`, apiKey: t.key, maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: TEST_MODEL,
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'stream please [mock:tokens=24]' }],
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text.split(' ').length).toBe(24);
    expect(usage?.completion_tokens).toBe(24);

    const noUsage = await chat(app, t.key, { model: TEST_MODEL, stream: true, messages: [{ role: 'user', content: 'no usage please' }] });
    expect(noUsage.status).toBe(200);
    expect(noUsage.headers.get('content-type')).toMatch(/text\/event-stream/);
    expect(noUsage.text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    expect(noUsage.text).not.toContain('"usage"');

    const rows = await ledger(t.tenantId);
    expect(rows.map((r) => [r.status, r.token_source, r.completion_tokens])).toEqual([
      ['committed', 'upstream', 24],
      ['committed', 'upstream', 16],
    ]);
    const total = rows.reduce((sum, r) => sum + Number(r.amount_micros), 0);
    expect((await tenantView(t.tenantId)).used_micros).toBe(total);
  });

  it('counts with tiktoken when the upstream reports no usage (M6.3), and records the source', async () => {
    const t = await app.tenant();
    const res = await chat(app, t.key, { model: TEST_MODEL, stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'count it yourself [mock:omit_usage] [mock:tokens=10]' }] });
    expect(res.status).toBe(200);
    const rows = await ledger(t.tenantId);
    expect(rows).toHaveLength(1);
    // The mock's words are one cl100k token each: tiktoken's count is exact.
    expect(rows[0]).toMatchObject({ status: 'committed', token_source: 'tiktoken', completion_tokens: 10 });
    expect(res.text).toContain('"completion_tokens":10');
  });

  it('denies with 429 insufficient_quota at once when the quota cannot cover the worst case, billing nothing', async () => {
    const t = await app.tenant({ quotaMicros: 50 }); // reservation is prompt + 64 * 2 micros > 50
    const before = app.mock.stats().requests;
    const res = await chat(app, t.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'hi' }] });
    expect(res.status).toBe(429);
    expect(res.json()).toEqual({ error: { message: expect.any(String), type: 'insufficient_quota', code: 'insufficient_quota' } });
    expect(app.mock.stats().requests).toBe(before);
    expect(await ledger(t.tenantId)).toEqual([]);
    expect((await tenantView(t.tenantId)).used_micros).toBe(0);
  });

  it('denies with 429 budget_exceeded when the key budget cannot cover it', async () => {
    const t = await app.tenant({ budgetMicros: 10 });
    const res = await chat(app, t.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'hi' }] });
    expect(res.status).toBe(429);
    expect((res.json() as { error: { code: string } }).error.code).toBe('budget_exceeded');
    expect(await ledger(t.tenantId)).toEqual([]);
  });

  it('caps the output at the reservation: max_tokens reaches the upstream as the priced cap', async () => {
    const t = await app.tenant();
    const res = await chat(app, t.key, { model: TEST_MODEL, max_tokens: 5, messages: [{ role: 'user', content: 'long answer [mock:tokens=40]' }] });
    expect(res.status).toBe(200);
    const body = res.json() as { usage: { prompt_tokens: number; completion_tokens: number } };
    expect(body.usage.completion_tokens).toBe(5);
    const [row] = await ledger(t.tenantId);
    expect(row!.reserved_micros).toBe(String(cost(row!.prompt_tokens, 5)));
    expect(row!.amount_micros).toBe(row!.reserved_micros);
  });

  it('answers 502 and voids the reservation when the upstream fails before any output', async () => {
    const t = await app.tenant();
    const res = await chat(app, t.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'boom [mock:status=400]' }] });
    expect(res.status).toBe(502);
    expect((res.json() as { error: { code: string } }).error.code).toBe('upstream_error');
    const rows = await ledger(t.tenantId);
    expect(rows.map((r) => [r.status, r.amount_micros])).toEqual([['voided', '0']]);
    expect((await tenantView(t.tenantId)).used_micros).toBe(0);
  });

  it('bills the delivered tokens when the upstream breaks off mid-stream', async () => {
    const t = await app.tenant();
    const res = await chat(app, t.key, { model: TEST_MODEL, stream: true, messages: [{ role: 'user', content: 'break [mock:fail=after:4] [mock:tokens=20]' }] });
    expect(res.status).toBe(200);
    const events = res.text.split('\n\n').filter((e) => e.startsWith('data: '));
    expect(events.filter((e) => e.includes('"delta"'))).toHaveLength(4);
    expect(res.text).toContain('"code":"upstream_error"');
    const [row] = await ledger(t.tenantId);
    expect(row).toMatchObject({ status: 'committed', completion_tokens: 4, token_source: 'tiktoken' });
    expect((await tenantView(t.tenantId)).used_micros).toBe(Number(row!.amount_micros));
  });

  it('shows one request to ops: ledger entry and workflow status (GET /admin/requests/:id)', async () => {
    const t = await app.tenant();
    const res = await chat(app, t.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'audit me' }] });
    const requestId = res.headers.get('x-request-id')!;
    const [row] = await ledger(t.tenantId);
    let view = await app.admin<Record<string, unknown>>('GET', `/admin/requests/${requestId}`);
    for (let i = 0; i < 50 && view.body.workflow_status === 'RUNNING'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      view = await app.admin<Record<string, unknown>>('GET', `/admin/requests/${requestId}`);
    }
    expect(view.status).toBe(200);
    expect(view.body).toMatchObject({
      request_id: requestId,
      tenant_id: t.tenantId,
      api_key_id: t.apiKeyId,
      operation: 'chat',
      status: 'committed',
      amount_micros: Number(row!.amount_micros),
      admission_path: 'redis',
      workflow_id: `billed-request:${requestId}`,
      workflow_status: 'COMPLETED',
    });
    expect((await app.admin('GET', '/admin/requests/req_unknown')).status).toBe(404);
  });

  it('accepts AlertManager webhooks with the admin token only', async () => {
    const alert = { status: 'firing', alerts: [{ status: 'firing', labels: { alertname: 'BillingSyncLagHigh', severity: 'critical' } }] };
    expect((await app.admin('POST', '/admin/alerts', alert)).status).toBe(204);
    const anonymous = await fetch(`${app.url}/admin/alerts`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(alert) });
    expect(anonymous.status).toBe(401);
  });

  it('exposes the billing metrics at /metrics (M1.4, M13)', async () => {
    const t = await app.tenant();
    await chat(app, t.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'measure me' }] });
    await ledger(t.tenantId);
    const text = await (await fetch(`${app.url}/metrics`)).text();
    const value = (line: RegExp): number => Number(text.split('\n').find((l) => line.test(l))?.split(' ').pop());
    expect(value(/^billing_admission_total\{outcome="admitted",path="redis"\}/)).toBeGreaterThanOrEqual(1);
    expect(value(/^billing_settlement_total\{outcome="committed",token_source="upstream"\}/)).toBeGreaterThanOrEqual(1);
    expect(value(/^billing_admission_duration_seconds_count/)).toBeGreaterThanOrEqual(1);
    expect(value(/^billing_cost_micros_total\{model="gpt-4o-mini"\}/)).toBeGreaterThan(0);
    expect(value(/^billing_pending_reservations /)).toBeGreaterThanOrEqual(0);
    expect(value(/^billing_pending_oldest_age_seconds /)).toBeGreaterThanOrEqual(0);
    expect(text).toMatch(/^http_request_duration_seconds_count\{method="POST",route="\/v1\/chat\/completions",status="200"\} \d+/m);
  });

  it('lists the priced models', async () => {
    const t = await app.tenant();
    const client = new OpenAI({ baseURL: `${app.url}/v1`, apiKey: t.key, maxRetries: 0 });
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toContain(TEST_MODEL);
  });
});
