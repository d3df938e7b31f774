/**
 * Admin tenant routes over real HTTP, PostgreSQL and Redis: create, read (live Redis
 * usage or ledger usage), admin token enforcement, and bad input that changes nothing.
 */
import { createBillingRepository } from '../../src/db/billing-repository';
import { CacheKeys } from '../../src/redis/cache-keys';
import { uniqueId } from '../helpers/services';
import { ADMIN_TOKEN, ADMIN_UNAUTHORIZED, createKey, createTenant, startAdminHarness, type AdminHarness, NO_LIMITS } from './admin-harness';

let h: AdminHarness;

beforeAll(async () => {
  h = await startAdminHarness();
});

afterAll(async () => {
  await h.close();
});

interface TenantRow {
  tenant_id: string;
  name: string;
  quota_limit_micros: string;
  used_micros: string;
}

async function tenantRow(id: string): Promise<TenantRow | undefined> {
  return h.db<TenantRow>('tenant_quota').where({ tenant_id: id }).first();
}

describe('POST /admin/tenants', () => {
  it('M1.1 creates a tenant and answers 201 with its quota view', async () => {
    const id = uniqueId('tenant');
    const res = await h.admin('POST', '/admin/tenants', { id, name: 'Acme Corp', quota_limit_micros: 5_000_000 });

    expect(res.status).toBe(201);
    expect(res.body).toEqual({ id, name: 'Acme Corp', quota_limit_micros: 5_000_000, used_micros: 0, remaining_micros: 5_000_000, ...NO_LIMITS });
    const row = await tenantRow(id);
    expect(row).toMatchObject({ tenant_id: id, name: 'Acme Corp', quota_limit_micros: '5000000', used_micros: '0' });
  });

  it('accepts a zero limit and the largest exact one', async () => {
    const zero = uniqueId('tenant');
    const max = uniqueId('tenant');
    const a = await h.admin('POST', '/admin/tenants', { id: zero, name: 'Zero', quota_limit_micros: 0 });
    const b = await h.admin('POST', '/admin/tenants', { id: max, name: 'Max', quota_limit_micros: Number.MAX_SAFE_INTEGER });

    expect(a.status).toBe(201);
    expect(a.body).toEqual({ id: zero, name: 'Zero', quota_limit_micros: 0, used_micros: 0, remaining_micros: 0, ...NO_LIMITS });
    expect(b.status).toBe(201);
    expect(b.body.quota_limit_micros).toBe(Number.MAX_SAFE_INTEGER);
    expect((await tenantRow(max))?.quota_limit_micros).toBe('9007199254740991');
  });

  it('answers 409 for an existing id and keeps the first tenant unchanged', async () => {
    const id = await createTenant(h, 1_000_000, 'First');
    const res = await h.admin('POST', '/admin/tenants', { id, name: 'Second', quota_limit_micros: 9_000_000 });

    expect(res.status).toBe(409);
    expect(res.body).toEqual({ error: { message: `Tenant '${id}' already exists.`, type: 'invalid_request_error', code: 'conflict' } });
    expect(await tenantRow(id)).toMatchObject({ name: 'First', quota_limit_micros: '1000000' });
  });

  it('creates a tenant once under 10 concurrent creates of the same id', async () => {
    const id = uniqueId('tenant');
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => h.admin('POST', '/admin/tenants', { id, name: `n${i}`, quota_limit_micros: 1000 + i })),
    );

    expect(results.map((r) => r.status).sort()).toEqual([201, ...Array<number>(9).fill(409)]);
    const winner = results.find((r) => r.status === 201)!;
    expect(await tenantRow(id)).toMatchObject({ name: winner.body.name, quota_limit_micros: String(winner.body.quota_limit_micros) });
  });

  describe('bad input gets a 400 in the OpenAI error shape and creates nothing', () => {
    const cases: Array<[string, (id: string) => string, string | undefined]> = [
      ['malformed JSON', (id) => `{"id":"${id}","name":"x","quota_limit_micros":1`, undefined],
      ['a string amount', (id) => JSON.stringify({ id, name: 'x', quota_limit_micros: '1000' }), 'quota_limit_micros'],
      ['a negative amount', (id) => JSON.stringify({ id, name: 'x', quota_limit_micros: -1 }), 'quota_limit_micros'],
      ['a fractional amount', (id) => JSON.stringify({ id, name: 'x', quota_limit_micros: 1.5 }), 'quota_limit_micros'],
      ['an amount past 2^53', (id) => JSON.stringify({ id, name: 'x', quota_limit_micros: 2 ** 53 }), 'quota_limit_micros'],
      ['a missing amount', (id) => JSON.stringify({ id, name: 'x' }), 'quota_limit_micros'],
      ['a missing name', (id) => JSON.stringify({ id, quota_limit_micros: 5 }), 'name'],
      ['a numeric name', (id) => JSON.stringify({ id, name: 7, quota_limit_micros: 5 }), 'name'],
      ['an unknown field', (id) => JSON.stringify({ id, name: 'x', quota_limit_micros: 5, quota_limit: 5 }), undefined],
      ['an array body', (id) => JSON.stringify([{ id, name: 'x', quota_limit_micros: 5 }]), undefined],
    ];

    it.each(cases)('%s', async (_label, body, param) => {
      const id = uniqueId('tenant');
      const res = await h.call('POST', '/admin/tenants', {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
        rawBody: body(id),
      });

      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_request_error' });
      expect(typeof res.body.error.message).toBe('string');
      expect(res.body.error.param).toBe(param);
      expect(await tenantRow(id)).toBeUndefined();
    });

    it('an id outside the safe alphabet (it would break Redis hash tags)', async () => {
      const res = await h.admin('POST', '/admin/tenants', { id: 'acme{1}', name: 'x', quota_limit_micros: 5 });

      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({ code: 'invalid_request_error', param: 'id' });
      expect(await tenantRow('acme{1}')).toBeUndefined();
    });

    it('no body at all', async () => {
      const res = await h.call('POST', '/admin/tenants', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });

      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe('invalid_request_error');
    });
  });
});

describe('GET /admin/tenants/:id', () => {
  it('reports the ledger usage (committed + pending) when the quota is not cached in Redis', async () => {
    const id = await createTenant(h, 10_000_000);
    const key = await createKey(h, id);
    const billing = createBillingRepository(h.db);
    const usage = { tenantId: id, apiKeyId: key.id, workflowId: null, model: 'gpt-4o', admissionPath: 'redis' as const };
    await billing.createPendingTransaction({ ...usage, requestId: uniqueId('req'), reservedMicros: 300_000 });
    const settled = await billing.createPendingTransaction({ ...usage, requestId: uniqueId('req'), reservedMicros: 900_000 });
    await billing.commitPendingTransaction({
      requestId: settled.entry.requestId,
      amountMicros: 450_000,
      promptTokens: 10,
      completionTokens: 20,
      tokenSource: 'upstream',
    });
    const voided = await billing.createPendingTransaction({ ...usage, requestId: uniqueId('req'), reservedMicros: 5_000_000 });
    await billing.voidPendingTransaction({ requestId: voided.entry.requestId, reason: 'upstream failed' });

    const res = await h.admin('GET', `/admin/tenants/${id}`);

    expect(res.status).toBe(200);
    expect(res.body).toEqual({ id, name: 'Acme Corp', quota_limit_micros: 10_000_000, used_micros: 750_000, remaining_micros: 9_250_000, ...NO_LIMITS });
  });

  it('reports the live Redis counter when the quota is cached (reservations included)', async () => {
    const id = await createTenant(h, 10_000_000);
    await h.testRedis.hset(CacheKeys.tenantQuota(id), { limit_micros: '10000000', used_micros: '12500000' });

    const res = await h.admin('GET', `/admin/tenants/${id}`);

    // A settled overage makes remaining negative: shown as is, never clamped.
    expect(res.body).toEqual({ id, name: 'Acme Corp', quota_limit_micros: 10_000_000, used_micros: 12_500_000, remaining_micros: -2_500_000, ...NO_LIMITS });
  });

  it('falls back to the ledger when the cached counter is corrupt', async () => {
    const id = await createTenant(h, 4_000_000);
    await h.testRedis.hset(CacheKeys.tenantQuota(id), { limit_micros: '4000000', used_micros: '1.5' });

    const res = await h.admin('GET', `/admin/tenants/${id}`);

    expect(res.body).toEqual({ id, name: 'Acme Corp', quota_limit_micros: 4_000_000, used_micros: 0, remaining_micros: 4_000_000, ...NO_LIMITS });
  });

  it('answers 404 for an unknown tenant and 400 for an id that cannot exist', async () => {
    const unknown = uniqueId('nobody');
    const res = await h.admin('GET', `/admin/tenants/${unknown}`);
    const bad = await h.admin('GET', `/admin/tenants/${encodeURIComponent('a b')}`);

    expect(res.status).toBe(404);
    expect(res.body).toEqual({ error: { message: `Tenant '${unknown}' not found`, type: 'invalid_request_error', code: 'not_found' } });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatchObject({ code: 'invalid_request_error', param: 'id' });
  });
});

describe('admin token', () => {
  const wrongHeaders: Array<[string, Record<string, string>]> = [
    ['no Authorization header', {}],
    ['a wrong token', { authorization: 'Bearer not-the-admin-token-at-all' }],
    ['the token with one character changed', { authorization: `Bearer ${ADMIN_TOKEN.slice(0, -1)}X` }],
    ['a prefix of the token', { authorization: `Bearer ${ADMIN_TOKEN.slice(0, 8)}` }],
    ['the token without the Bearer scheme', { authorization: ADMIN_TOKEN }],
    ['Basic auth', { authorization: `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}` }],
  ];

  it.each(wrongHeaders)('%s -> 401 and the tenant is not created', async (_label, headers) => {
    const id = uniqueId('tenant');
    const res = await h.call('POST', '/admin/tenants', {
      headers: { 'content-type': 'application/json', ...headers },
      rawBody: JSON.stringify({ id, name: 'x', quota_limit_micros: 5 }),
    });

    expect(res.status).toBe(401);
    expect(res.body).toEqual(ADMIN_UNAUTHORIZED);
    expect(await tenantRow(id)).toBeUndefined();
  });

  it('guards reads too, and accepts the scheme in any case', async () => {
    const id = await createTenant(h, 1);
    const denied = await h.call('GET', `/admin/tenants/${id}`, { headers: { authorization: 'Bearer wrong' } });
    const lower = await h.call('GET', `/admin/tenants/${id}`, { headers: { authorization: `bearer ${ADMIN_TOKEN}` } });

    expect(denied.status).toBe(401);
    expect(denied.body).toEqual(ADMIN_UNAUTHORIZED);
    expect(lower.status).toBe(200);
    expect(lower.body.id).toBe(id);
  });

  it('an API key is not an admin token', async () => {
    const id = await createTenant(h, 1);
    const { key } = await createKey(h, id);
    const res = await h.call('GET', `/admin/tenants/${id}`, { headers: { authorization: `Bearer ${key}` } });

    expect(res.status).toBe(401);
    expect(res.body).toEqual(ADMIN_UNAUTHORIZED);
  });
});
