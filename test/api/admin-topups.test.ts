/**
 * Top-ups: idempotent on reference (M3.5, M12 idempotency 100%), exact under
 * concurrency in PostgreSQL and in the cached Redis limit (the script itself: test/redis/quota-limit-raise.test.ts).
 */
import type { Redis } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';
import { uniqueId } from '../helpers/services';
import { ADMIN_TOKEN, createTenant, startAdminHarness, type AdminHarness, NO_LIMITS } from './admin-harness';
import { unreachableRedis } from '../helpers/services';

let h: AdminHarness;

beforeAll(async () => {
  h = await startAdminHarness();
});

afterAll(async () => {
  await h.close();
});

async function limitOf(tenantId: string): Promise<string> {
  const row = await h.db('tenant_quota').where({ tenant_id: tenantId }).first('quota_limit_micros');
  return row.quota_limit_micros as string;
}

async function ledgerRows(tenantId: string) {
  return h.db('billing_transaction').where({ tenant_id: tenantId }).orderBy('id');
}

function topUp(tenantId: string, amount: unknown, reference: unknown) {
  return h.admin('POST', `/admin/tenants/${tenantId}/topups`, { amount_micros: amount, reference });
}

describe('POST /admin/tenants/:id/topups', () => {
  it('M3.5 credits the tenant: 201, one committed topup row, the limit raised', async () => {
    const id = await createTenant(h, 1_000_000);
    const res = await topUp(id, 2_500_000, 'invoice-1');

    expect(res.status).toBe(201);
    expect(res.body).toEqual({ id, name: 'Acme Corp', quota_limit_micros: 3_500_000, used_micros: 0, remaining_micros: 3_500_000, ...NO_LIMITS });
    expect(await limitOf(id)).toBe('3500000');
    const rows = await ledgerRows(id);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      request_id: `topup:${id}:invoice-1`,
      tenant_id: id,
      api_key_id: null,
      kind: 'topup',
      status: 'committed',
      amount_micros: '2500000',
      reserved_micros: '0',
    });
    expect(rows[0].committed_at).toBeInstanceOf(Date);
  });

  it('M12 the same reference again answers 200 with the same body and credits nothing', async () => {
    const id = await createTenant(h, 1_000_000);
    const first = await topUp(id, 700_000, 'wire-42');
    const second = await topUp(id, 700_000, 'wire-42');

    expect(first.status).toBe(201);
    expect(second.status).toBe(200);
    expect(second.body).toEqual(first.body);
    expect(second.body.quota_limit_micros).toBe(1_700_000);
    expect(await limitOf(id)).toBe('1700000');
    expect(await ledgerRows(id)).toHaveLength(1);
  });

  it('a reused reference with another amount is a 409 and changes nothing', async () => {
    const id = await createTenant(h, 1_000_000);
    await topUp(id, 700_000, 'wire-43');
    const res = await topUp(id, 900_000, 'wire-43');

    expect(res.status).toBe(409);
    expect(res.body).toEqual({
      error: { message: "Reference 'wire-43' was already used for a top-up of 700000 micros.", type: 'invalid_request_error', code: 'conflict' },
    });
    expect(await limitOf(id)).toBe('1700000');
    expect(await ledgerRows(id)).toHaveLength(1);
  });

  it('references are per tenant: the same reference credits two tenants once each', async () => {
    const a = await createTenant(h, 0);
    const b = await createTenant(h, 0);
    expect((await topUp(a, 100, 'shared-ref')).status).toBe(201);
    expect((await topUp(b, 200, 'shared-ref')).status).toBe(201);

    expect(await limitOf(a)).toBe('100');
    expect(await limitOf(b)).toBe('200');
  });

  it('M12 20 concurrent calls with one reference raise the limit once', async () => {
    const id = await createTenant(h, 1_000_000);
    await h.testRedis.hset(CacheKeys.tenantQuota(id), { limit_micros: '1000000', used_micros: '0' });

    const results = await Promise.all(Array.from({ length: 20 }, () => topUp(id, 333_333, 'once')));

    expect(results.map((r) => r.status).sort()).toEqual([...Array<number>(19).fill(200), 201]);
    for (const r of results) expect(r.body.quota_limit_micros).toBe(1_333_333);
    expect(await limitOf(id)).toBe('1333333');
    expect(await ledgerRows(id)).toHaveLength(1);
    expect(await h.testRedis.hget(CacheKeys.tenantQuota(id), 'limit_micros')).toBe('1333333');
  });

  it('M4.4 20 concurrent top-ups with different references end at the exact sum in PostgreSQL and Redis', async () => {
    const id = await createTenant(h, 5_000_000);
    // A live cached counter with open reservations: the raise must keep used_micros untouched.
    await h.testRedis.hset(CacheKeys.tenantQuota(id), { limit_micros: '5000000', used_micros: '4200000' });
    const amounts = Array.from({ length: 20 }, (_, i) => 1_000_003 * (i + 1));
    const sum = amounts.reduce((a, b) => a + b, 0);

    const results = await Promise.all(amounts.map((amount, i) => topUp(id, amount, `batch-${i}`)));

    expect(results.every((r) => r.status === 201)).toBe(true);
    expect(await limitOf(id)).toBe(String(5_000_000 + sum));
    expect(await h.testRedis.hgetall(CacheKeys.tenantQuota(id))).toMatchObject({ limit_micros: String(5_000_000 + sum), used_micros: '4200000' });
    const rows = await ledgerRows(id);
    expect(rows).toHaveLength(20);
    expect(rows.map((r) => Number(r.amount_micros)).sort((x, y) => x - y)).toEqual(amounts);
    const view = await h.admin('GET', `/admin/tenants/${id}`);
    expect(view.body).toEqual({
      id,
      name: 'Acme Corp',
      quota_limit_micros: 5_000_000 + sum,
      used_micros: 4_200_000,
      remaining_micros: 5_000_000 + sum - 4_200_000,
      ...NO_LIMITS,
    });
  });

  it('does not create the quota hash when it is not cached (warm-up reads the new limit from PostgreSQL)', async () => {
    const id = await createTenant(h, 1_000_000);
    const res = await topUp(id, 1, 'tiny');

    expect(res.status).toBe(201);
    expect(await h.testRedis.exists(CacheKeys.tenantQuota(id))).toBe(0);
  });

  it('refuses a top-up that would pass 2^53 micros, with nothing recorded', async () => {
    const id = await createTenant(h, Number.MAX_SAFE_INTEGER - 10);
    const res = await topUp(id, 11, 'too-much');

    expect(res.status).toBe(400);
    expect(res.body).toEqual({
      error: {
        message: 'This top-up would raise the quota limit beyond the largest exact amount.',
        type: 'invalid_request_error',
        code: 'invalid_request_error',
        param: 'amount_micros',
      },
    });
    expect(await limitOf(id)).toBe(String(Number.MAX_SAFE_INTEGER - 10));
    expect(await ledgerRows(id)).toHaveLength(0);
    expect((await topUp(id, 10, 'exactly-max')).body.quota_limit_micros).toBe(Number.MAX_SAFE_INTEGER);
  });

  describe('bad input: 4xx in the OpenAI error shape, nothing recorded', () => {
    const cases: Array<[string, string, string | undefined]> = [
      ['malformed JSON', '{"amount_micros": 5, "reference": "r"', undefined],
      ['a string amount', JSON.stringify({ amount_micros: '5000', reference: 'r' }), 'amount_micros'],
      ['a negative amount', JSON.stringify({ amount_micros: -5, reference: 'r' }), 'amount_micros'],
      ['a zero amount', JSON.stringify({ amount_micros: 0, reference: 'r' }), 'amount_micros'],
      ['a fractional amount', JSON.stringify({ amount_micros: 10.5, reference: 'r' }), 'amount_micros'],
      ['a missing amount', JSON.stringify({ reference: 'r' }), 'amount_micros'],
      ['a missing reference', JSON.stringify({ amount_micros: 5 }), 'reference'],
      ['an empty reference', JSON.stringify({ amount_micros: 5, reference: '' }), 'reference'],
      ['a numeric reference', JSON.stringify({ amount_micros: 5, reference: 5 }), 'reference'],
    ];

    it.each(cases)('%s -> 400', async (_label, rawBody, param) => {
      const id = await createTenant(h, 1_000);
      const res = await h.call('POST', `/admin/tenants/${id}/topups`, {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
        rawBody,
      });

      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_request_error' });
      expect(res.body.error.param).toBe(param);
      expect(await limitOf(id)).toBe('1000');
      expect(await ledgerRows(id)).toHaveLength(0);
    });

    it('an unknown tenant -> 404 and no ledger row', async () => {
      const ghost = uniqueId('ghost');
      const res = await topUp(ghost, 5, 'r');

      expect(res.status).toBe(404);
      expect(res.body).toEqual({ error: { message: `Tenant '${ghost}' not found`, type: 'invalid_request_error', code: 'not_found' } });
      expect(await h.db('billing_transaction').where({ request_id: `topup:${ghost}:r` })).toHaveLength(0);
    });

    it('without the admin token -> 401 and nothing credited', async () => {
      const id = await createTenant(h, 1_000);
      const res = await h.call('POST', `/admin/tenants/${id}/topups`, {
        headers: { 'content-type': 'application/json' },
        rawBody: JSON.stringify({ amount_micros: 5, reference: 'r' }),
      });

      expect(res.status).toBe(401);
      expect(await limitOf(id)).toBe('1000');
      expect(await ledgerRows(id)).toHaveLength(0);
    });
  });
});

describe('M12 top-ups while Redis is unreachable', () => {
  let deadRedis: Redis;
  let degraded: AdminHarness;

  beforeAll(async () => {
    deadRedis = unreachableRedis();
    degraded = await startAdminHarness({ appRedis: deadRedis });
  });

  afterAll(async () => {
    await degraded.close();
    deadRedis.disconnect();
  });

  it('commits the credit anyway, and the same reference later raises the cached limit', async () => {
    const id = await createTenant(h, 1_000_000);
    await h.testRedis.hset(CacheKeys.tenantQuota(id), { limit_micros: '1000000', used_micros: '250000' });

    const res = await degraded.admin('POST', `/admin/tenants/${id}/topups`, { amount_micros: 4_000_000, reference: 'during-outage' });

    // Redis is down for this app: usage comes from the ledger (no usage rows yet).
    expect(res.status).toBe(201);
    expect(res.body).toEqual({ id, name: 'Acme Corp', quota_limit_micros: 5_000_000, used_micros: 0, remaining_micros: 5_000_000, ...NO_LIMITS });
    expect(await limitOf(id)).toBe('5000000');
    expect(await h.testRedis.hget(CacheKeys.tenantQuota(id), 'limit_micros')).toBe('1000000');
    expect(degraded.logLines.some((l) => l.includes('top-up committed but the cached quota limit was not raised'))).toBe(true);

    const retry = await topUp(id, 4_000_000, 'during-outage');
    expect(retry.status).toBe(200);
    expect(await h.testRedis.hgetall(CacheKeys.tenantQuota(id))).toEqual({ limit_micros: '5000000', used_micros: '250000', version: '1' });
    expect(await ledgerRows(id)).toHaveLength(1);
  });
});
