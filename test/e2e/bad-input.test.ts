/**
 * Bad input gets a clear 4xx in the OpenAI error shape and changes nothing
 * (docs/architecture.md invariants): no ledger row, no counter moved, no upstream call.
 */
import type { Knex } from 'knex';
import { chat, startTestApp, TEST_MODEL, type TestApp } from '../helpers/app';
import { testDb } from '../helpers/services';

const errorShape = (code: string) => ({ error: expect.objectContaining({ message: expect.any(String), type: expect.any(String), code }) });

describe('bad input changes nothing', () => {
  let app: TestApp;
  let db: Knex;
  let tenant: Awaited<ReturnType<TestApp['tenant']>>;
  let upstreamBefore: number;
  /** Requests the tests below send on purpose with a valid key of another tenant. */
  let legitimateUpstreamCalls = 0;

  beforeAll(async () => {
    app = await startTestApp();
    db = testDb();
    tenant = await app.tenant({ quotaMicros: 1_000_000 });
    upstreamBefore = app.mock.stats().requests;
  }, 60_000);
  afterAll(async () => {
    try {
      // Nothing above may have reached the upstream or the ledger.
      expect(app.mock.stats().requests).toBe(upstreamBefore + legitimateUpstreamCalls);
      expect(await db('billing_transaction').where({ tenant_id: tenant.tenantId })).toEqual([]);
      const view = await app.admin<{ used_micros: number; quota_limit_micros: number }>('GET', `/admin/tenants/${tenant.tenantId}`);
      expect(view.body).toMatchObject({ used_micros: 0, quota_limit_micros: 1_000_000 });
    } finally {
      await app.stop();
      await db.destroy();
    }
  });

  const cases: Array<[string, unknown, number, string]> = [
    ['malformed JSON', '{"model": "gpt-4o-mini", "messages": [', 400, 'invalid_request_error'],
    ['missing messages', { model: TEST_MODEL }, 400, 'invalid_request_error'],
    ['empty messages', { model: TEST_MODEL, messages: [] }, 400, 'invalid_request_error'],
    ['messages of the wrong type', { model: TEST_MODEL, messages: 'hello' }, 400, 'invalid_request_error'],
    ['a message without a role', { model: TEST_MODEL, messages: [{ content: 'hi' }] }, 400, 'invalid_request_error'],
    ['stream as a string', { model: TEST_MODEL, stream: 'yes', messages: [{ role: 'user', content: 'hi' }] }, 400, 'invalid_request_error'],
    ['max_tokens negative', { model: TEST_MODEL, max_tokens: -5, messages: [{ role: 'user', content: 'hi' }] }, 400, 'invalid_request_error'],
    ['max_tokens fractional', { model: TEST_MODEL, max_tokens: 1.5, messages: [{ role: 'user', content: 'hi' }] }, 400, 'invalid_request_error'],
    ['missing model', { messages: [{ role: 'user', content: 'hi' }] }, 400, 'invalid_request_error'],
    ['unknown model', { model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }, 404, 'model_not_found'],
  ];

  it.each(cases)('%s -> %i %s', async (_name, body, status, code) => {
    const res = await chat(app, tenant.key, body);
    expect(res.status).toBe(status);
    expect(res.json()).toEqual(errorShape(code));
    expect(res.headers.get('x-request-id')).toMatch(/^req_[0-9a-f]{32}$/); // every error can be traced
  });

  it('a large body with an unknown API key -> 401: the body is parsed only after authentication', async () => {
    const res = await chat(app, 'sk-not-a-key', { model: TEST_MODEL, messages: [{ role: 'user', content: 'x'.repeat(4 * 1024 * 1024) }] });
    expect(res.status).toBe(401);
  });

  it('admin bodies keep the 1 MB limit -> 413', async () => {
    const res = await app.admin('POST', '/admin/tenants', { id: 'too-big', name: 'x'.repeat(1024 * 1024 + 1), quota_limit_micros: 1 });
    expect(res.status).toBe(413);
  });

  it('a body above MAX_REQUEST_BODY_BYTES (default 32 MiB) -> 413', async () => {
    const res = await chat(app, tenant.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'x'.repeat(32 * 1024 * 1024 + 1) }] });
    expect(res.status).toBe(413);
    expect(res.json()).toEqual(errorShape('request_too_large'));
  });

  it('a bad Idempotency-Key -> 400', async () => {
    const res = await chat(app, tenant.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'hi' }] }, { 'Idempotency-Key': 'has spaces in it' });
    expect(res.status).toBe(400);
  });

  it.each([
    ['no key', undefined],
    ['an unknown key', 'sk-bq-not-a-real-key'],
  ])('%s -> 401 invalid_api_key', async (_name, key) => {
    const res = await fetch(`${app.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: JSON.stringify({ model: TEST_MODEL, messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual(errorShape('invalid_api_key'));
  });

  it('a revoked key -> 401 at once, nothing billed', async () => {
    const other = await app.tenant();
    const ok = await chat(app, other.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'hi' }] });
    legitimateUpstreamCalls++;
    expect(ok.status).toBe(200);
    expect((await app.admin('DELETE', `/admin/api-keys/${other.apiKeyId}`)).status).toBe(200);
    const rows = await db('billing_transaction').where({ tenant_id: other.tenantId }).count<{ count: string }[]>('* as count');
    const res = await chat(app, other.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'hi' }] });
    expect(res.status).toBe(401);
    expect(await db('billing_transaction').where({ tenant_id: other.tenantId }).count<{ count: string }[]>('* as count')).toEqual(rows);
  });

  it.each([
    ['negative amount', { amount_micros: -1, reference: 'r1' }],
    ['fractional amount', { amount_micros: 1.5, reference: 'r2' }],
    ['amount as a string', { amount_micros: '100', reference: 'r3' }],
    ['missing reference', { amount_micros: 100 }],
  ])('admin top-up with %s -> 400, quota unchanged', async (_name, body) => {
    const res = await app.admin('POST', `/admin/tenants/${tenant.tenantId}/topups`, body);
    expect(res.status).toBe(400);
    expect(res.body).toEqual(errorShape('invalid_request_error'));
  });

  it('admin endpoints without the admin token -> 401, with a tenant key -> 401', async () => {
    const none = await fetch(`${app.url}/admin/tenants/${tenant.tenantId}`);
    expect(none.status).toBe(401);
    const withKey = await fetch(`${app.url}/admin/tenants/${tenant.tenantId}`, { headers: { authorization: `Bearer ${tenant.key}` } });
    expect(withKey.status).toBe(401);
  });
});
