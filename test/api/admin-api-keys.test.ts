/**
 * Admin API-key routes: a key is shown once and stored hashed (Isolation invariant),
 * its spend is read live from Redis or from the ledger, and revocation is idempotent.
 */
import { createHash } from 'node:crypto';
import { createBillingRepository } from '../../src/db/billing-repository';
import { UNLIMITED } from '../../src/edge/limits';
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

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

interface KeyRow {
  id: string;
  tenant_id: string;
  key_hash: string;
  budget_micros: string | null;
  status: string;
  revoked_at: Date | null;
}

async function keyRows(tenantId: string): Promise<KeyRow[]> {
  return h.db<KeyRow>('api_key_quota').where({ tenant_id: tenantId }).orderBy('created_at');
}

async function keyRow(id: string): Promise<KeyRow> {
  const row = await h.db<KeyRow>('api_key_quota').where({ id }).first();
  if (!row) throw new Error(`no key ${id}`);
  return row;
}

describe('POST /admin/tenants/:id/api-keys', () => {
  it('issues a key shown once: 201 with the key, stored only as its SHA-256', async () => {
    const tenantId = await createTenant(h, 10_000_000);
    const res = await h.admin('POST', `/admin/tenants/${tenantId}/api-keys`, { name: 'backend', budget_micros: 2_000_000 });

    expect(res.status).toBe(201);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.body).toEqual({
      id: expect.stringMatching(/^key_[0-9a-f]{24}$/),
      key: expect.stringMatching(/^sk-bq-[A-Za-z0-9_-]{43}$/),
      tenant_id: tenantId,
      name: 'backend',
      budget_micros: 2_000_000,
      status: 'active',
      ...NO_LIMITS,
    });
    const key = res.body.key as string;
    const rows = await keyRows(tenantId);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      id: res.body.id,
      tenant_id: tenantId,
      name: 'backend',
      key_hash: sha256(key),
      key_prefix: key.slice(0, 8),
      budget_micros: '2000000',
      spent_micros: '0',
      status: 'active',
      revoked_at: null,
    });
    // No column anywhere in the row holds the key (nor any 12-character slice of its secret part).
    const stored = JSON.stringify(rows[0]);
    expect(stored).not.toContain(key);
    expect(stored).not.toContain(key.slice(6, 18));
    expect(h.logLines.join('')).not.toContain(key);
  });

  it('a missing or null budget means "no key budget" (null)', async () => {
    const tenantId = await createTenant(h, 1);
    const absent = await h.admin('POST', `/admin/tenants/${tenantId}/api-keys`, { name: 'a' });
    const nulled = await h.admin('POST', `/admin/tenants/${tenantId}/api-keys`, { name: 'b', budget_micros: null });

    expect(absent.body.budget_micros).toBeNull();
    expect(nulled.body.budget_micros).toBeNull();
    expect((await keyRows(tenantId)).map((r) => r.budget_micros)).toEqual([null, null]);
  });

  it('every key and id is different', async () => {
    const tenantId = await createTenant(h, 1);
    const keys = await Promise.all(Array.from({ length: 10 }, () => createKey(h, tenantId)));

    expect(new Set(keys.map((k) => k.key)).size).toBe(10);
    expect(new Set(keys.map((k) => k.id)).size).toBe(10);
  });

  it('an unknown tenant -> 404 and no key', async () => {
    const ghost = uniqueId('ghost');
    const res = await h.admin('POST', `/admin/tenants/${ghost}/api-keys`, { name: 'x' });

    expect(res.status).toBe(404);
    expect(res.body).toEqual({ error: { message: `Tenant '${ghost}' not found`, type: 'invalid_request_error', code: 'not_found' } });
    expect(await keyRows(ghost)).toHaveLength(0);
  });

  const badBodies: Array<[string, string, string | undefined]> = [
    ['malformed JSON', '{"name": "x",', undefined],
    ['a negative budget', JSON.stringify({ name: 'x', budget_micros: -1 }), 'budget_micros'],
    ['a string budget', JSON.stringify({ name: 'x', budget_micros: '100' }), 'budget_micros'],
    ['a fractional budget', JSON.stringify({ name: 'x', budget_micros: 0.5 }), 'budget_micros'],
    ['a missing name', JSON.stringify({ budget_micros: 100 }), 'name'],
    ['an unknown field', JSON.stringify({ name: 'x', budget: 100 }), undefined],
  ];

  it.each(badBodies)('%s -> 400 and no key', async (_label, rawBody, param) => {
    const tenantId = await createTenant(h, 1);
    const res = await h.call('POST', `/admin/tenants/${tenantId}/api-keys`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      rawBody,
    });

    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_request_error' });
    expect(res.body.error.param).toBe(param);
    expect(await keyRows(tenantId)).toHaveLength(0);
  });

  it('without the admin token -> 401 and no key', async () => {
    const tenantId = await createTenant(h, 1);
    const res = await h.call('POST', `/admin/tenants/${tenantId}/api-keys`, {
      headers: { authorization: 'Bearer nope', 'content-type': 'application/json' },
      rawBody: JSON.stringify({ name: 'x' }),
    });

    expect(res.status).toBe(401);
    expect(res.body).toEqual(ADMIN_UNAUTHORIZED);
    expect(await keyRows(tenantId)).toHaveLength(0);
  });
});

describe('GET /admin/api-keys/:id', () => {
  it('shows the key without the key itself; spent from the ledger when not cached', async () => {
    const tenantId = await createTenant(h, 10_000_000);
    const { id } = await createKey(h, tenantId, 3_000_000);
    const billing = createBillingRepository(h.db);
    const base = { tenantId, apiKeyId: id, workflowId: null, model: 'gpt-4o', admissionPath: 'redis' as const };
    await billing.createPendingTransaction({ ...base, requestId: uniqueId('req'), reservedMicros: 120_000 });
    const settled = await billing.createPendingTransaction({ ...base, requestId: uniqueId('req'), reservedMicros: 500_000 });
    await billing.commitPendingTransaction({
      requestId: settled.entry.requestId,
      amountMicros: 81_234,
      promptTokens: 100,
      completionTokens: 50,
      tokenSource: 'tiktoken',
    });

    const res = await h.admin('GET', `/admin/api-keys/${id}`);

    expect(res.status).toBe(200);
    expect(res.body).toEqual({ id, tenant_id: tenantId, name: 'ci key', budget_micros: 3_000_000, spent_micros: 201_234, status: 'active', ...NO_LIMITS });
  });

  it('reports the live Redis spend when the budget is cached', async () => {
    const tenantId = await createTenant(h, 10_000_000);
    const { id } = await createKey(h, tenantId);
    await h.testRedis.hset(CacheKeys.apiKeyBudget(tenantId, id), { budget_micros: '-1', spent_micros: '987654' });

    const res = await h.admin('GET', `/admin/api-keys/${id}`);

    expect(res.body).toEqual({ id, tenant_id: tenantId, name: 'ci key', budget_micros: null, spent_micros: 987_654, status: 'active', ...NO_LIMITS });
  });

  it('an unknown key -> 404', async () => {
    const res = await h.admin('GET', '/admin/api-keys/key_doesnotexist');

    expect(res.status).toBe(404);
    expect(res.body).toEqual({ error: { message: "API key 'key_doesnotexist' not found", type: 'invalid_request_error', code: 'not_found' } });
  });
});

describe('DELETE /admin/api-keys/:id', () => {
  it('revokes: 200, status revoked in PostgreSQL and in the lookup cache; idempotent', async () => {
    const tenantId = await createTenant(h, 1);
    const { id, key } = await createKey(h, tenantId);

    const first = await h.admin('DELETE', `/admin/api-keys/${id}`);
    const rowAfterFirst = await keyRow(id);
    const second = await h.admin('DELETE', `/admin/api-keys/${id}`);
    const rowAfterSecond = await keyRow(id);

    expect(first.status).toBe(200);
    expect(first.body).toEqual({ id, status: 'revoked' });
    expect(second.status).toBe(200);
    expect(second.body).toEqual({ id, status: 'revoked' });
    expect(rowAfterFirst.status).toBe('revoked');
    expect(rowAfterFirst.revoked_at).toBeInstanceOf(Date);
    expect(rowAfterSecond.revoked_at).toEqual(rowAfterFirst.revoked_at);
    const cached = await h.testRedis.get(CacheKeys.apiKeyLookup(sha256(key)));
    expect(JSON.parse(cached!)).toEqual({ id, tenant_id: tenantId, status: 'revoked', limits: { tenant: UNLIMITED, key: UNLIMITED } });
    expect(await h.testRedis.ttl(CacheKeys.apiKeyLookup(sha256(key)))).toBeGreaterThan(0);
    expect((await h.admin('GET', `/admin/api-keys/${id}`)).body.status).toBe('revoked');
  });

  it('an unknown key -> 404; without the admin token -> 401 and the key stays active', async () => {
    const tenantId = await createTenant(h, 1);
    const { id } = await createKey(h, tenantId);

    const unknown = await h.admin('DELETE', '/admin/api-keys/key_nope');
    const denied = await h.call('DELETE', `/admin/api-keys/${id}`);

    expect(unknown.status).toBe(404);
    expect(denied.status).toBe(401);
    expect(denied.body).toEqual(ADMIN_UNAUTHORIZED);
    expect((await keyRow(id)).status).toBe('active');
  });
});
