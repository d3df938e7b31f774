/**
 * `GET /admin/tenants/:id/transactions`: the tenant's ledger, newest first, keyset
 * paginated, in snake_case with exact integer micros; only that tenant's rows.
 */
import { createBillingRepository } from '../../src/db/billing-repository';
import { uniqueId } from '../helpers/services';
import { createKey, createTenant, startAdminHarness, type AdminHarness } from './admin-harness';

let h: AdminHarness;

beforeAll(async () => {
  h = await startAdminHarness();
});

afterAll(async () => {
  await h.close();
});

interface RawRow {
  id: string;
  created_at: Date;
  committed_at: Date | null;
}

async function rawRow(requestId: string): Promise<RawRow> {
  const row = await h.db<RawRow & { request_id: string }>('billing_transaction').where({ request_id: requestId }).first();
  if (!row) throw new Error(`no ledger row ${requestId}`);
  return row;
}

it('M3.4 lists committed, pending and top-up rows newest first, page by page', async () => {
  const tenantId = await createTenant(h, 10_000_000);
  const other = await createTenant(h, 10_000_000);
  const { id: keyId } = await createKey(h, tenantId);
  const billing = createBillingRepository(h.db);

  expect((await h.admin('POST', `/admin/tenants/${tenantId}/topups`, { amount_micros: 5_000_000, reference: 'inv-1' })).status).toBe(201);
  const settledId = uniqueId('req');
  await billing.createPendingTransaction({
    requestId: settledId, tenantId, apiKeyId: keyId, workflowId: `wf-${settledId}`, model: 'gpt-4o', reservedMicros: 640_000, admissionPath: 'redis',
  });
  await billing.commitPendingTransaction({ requestId: settledId, amountMicros: 12_345, promptTokens: 1_000, completionTokens: 234, tokenSource: 'upstream' });
  const pendingId = uniqueId('req');
  await billing.createPendingTransaction({
    requestId: pendingId, tenantId, apiKeyId: keyId, workflowId: null, model: 'gpt-4o-mini', reservedMicros: 99_000, admissionPath: 'postgres', promptTokens: 42,
  });
  expect((await h.admin('POST', `/admin/tenants/${other}/topups`, { amount_micros: 1, reference: 'elsewhere' })).status).toBe(201);

  const topup = await rawRow(`topup:${tenantId}:inv-1`);
  const settled = await rawRow(settledId);
  const pending = await rawRow(pendingId);

  const first = await h.admin('GET', `/admin/tenants/${tenantId}/transactions?limit=2`);
  expect(first.status).toBe(200);
  expect(first.body).toEqual({
    data: [
      {
        id: Number(pending.id),
        request_id: pendingId,
        kind: 'usage',
        status: 'pending',
        model: 'gpt-4o-mini',
        api_key_id: keyId,
        reserved_micros: 99_000,
        amount_micros: null,
        prompt_tokens: 42,
        completion_tokens: null,
        token_source: null,
        created_at: pending.created_at.toISOString(),
        committed_at: null,
      },
      {
        id: Number(settled.id),
        request_id: settledId,
        kind: 'usage',
        status: 'committed',
        model: 'gpt-4o',
        api_key_id: keyId,
        reserved_micros: 640_000,
        amount_micros: 12_345,
        prompt_tokens: 1_000,
        completion_tokens: 234,
        token_source: 'upstream',
        created_at: settled.created_at.toISOString(),
        committed_at: settled.committed_at!.toISOString(),
      },
    ],
    next_cursor: expect.any(String),
  });

  const second = await h.admin('GET', `/admin/tenants/${tenantId}/transactions?limit=2&cursor=${encodeURIComponent(first.body.next_cursor as string)}`);
  expect(second.status).toBe(200);
  expect(second.body).toEqual({
    data: [
      {
        id: Number(topup.id),
        request_id: `topup:${tenantId}:inv-1`,
        kind: 'topup',
        status: 'committed',
        model: null,
        api_key_id: null,
        reserved_micros: 0,
        amount_micros: 5_000_000,
        prompt_tokens: null,
        completion_tokens: null,
        token_source: null,
        created_at: topup.created_at.toISOString(),
        committed_at: topup.committed_at!.toISOString(),
      },
    ],
    next_cursor: null,
  });

  // The default page holds all three rows and nothing of the other tenant.
  const all = await h.admin('GET', `/admin/tenants/${tenantId}/transactions`);
  expect((all.body.data as Array<{ request_id: string }>).map((r) => r.request_id)).toEqual([pendingId, settledId, `topup:${tenantId}:inv-1`]);
  expect(all.body.next_cursor).toBeNull();
});

it('an empty ledger is an empty page', async () => {
  const tenantId = await createTenant(h, 1);
  const res = await h.admin('GET', `/admin/tenants/${tenantId}/transactions`);

  expect(res.status).toBe(200);
  expect(res.body).toEqual({ data: [], next_cursor: null });
});

describe('bad queries -> 400 in the OpenAI error shape', () => {
  const cases: Array<[string, string, string]> = [
    ['limit=0', 'limit=0', 'limit'],
    ['limit=501', 'limit=501', 'limit'],
    ['limit=abc', 'limit=abc', 'limit'],
    ['limit=1.5', 'limit=1.5', 'limit'],
    ['limit=-1', 'limit=-1', 'limit'],
    ['a repeated limit', 'limit=1&limit=2', 'limit'],
    ['a forged cursor', 'cursor=not-a-cursor!', 'cursor'],
    ['a cursor of another shape', `cursor=${Buffer.from('abc').toString('base64url')}`, 'cursor'],
  ];

  it.each(cases)('%s', async (_label, query, param) => {
    const tenantId = await createTenant(h, 1);
    const res = await h.admin('GET', `/admin/tenants/${tenantId}/transactions?${query}`);

    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_request_error', param });
  });
});

it('an unknown tenant -> 404; no admin token -> 401', async () => {
  const ghost = uniqueId('ghost');
  const unknown = await h.admin('GET', `/admin/tenants/${ghost}/transactions`);
  const tenantId = await createTenant(h, 1);
  const denied = await h.call('GET', `/admin/tenants/${tenantId}/transactions`);

  expect(unknown.status).toBe(404);
  expect(unknown.body).toEqual({ error: { message: `Tenant '${ghost}' not found`, type: 'invalid_request_error', code: 'not_found' } });
  expect(denied.status).toBe(401);
});
