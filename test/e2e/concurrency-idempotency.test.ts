/**
 * The invariants under concurrency (M10.2, M12): concurrent requests never
 * reserve past a limit and end with exact balances; one Idempotency-Key is billed
 * once however often, and however concurrently, it is sent.
 */
import type { Knex } from 'knex';
import { chat, startTestApp, TEST_MODEL, type TestApp } from '../helpers/app';
import { ledgerUsage, settled } from '../helpers/ledger';
import { testDb, testRedis } from '../helpers/services';
import { readKeyBudget, readTenantQuota } from '../../src/redis/quota-cache';
import type { Redis } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';

describe('concurrency and idempotency (M10.2)', () => {
  let app: TestApp;
  let db: Knex;
  let redis: Redis;
  beforeAll(async () => {
    app = await startTestApp();
    db = testDb();
    redis = await testRedis();
  }, 60_000);
  afterAll(async () => {
    await app?.stop();
    await db?.destroy();
    redis?.disconnect();
  });

  it('120 concurrent requests on one tenant never reserve past its limit and end with exact balances', async () => {
    // Each request reserves its worst case (prompt + 64 output tokens = 137 micros) and settles at
    // about a third of it: the quota admits only what the open reservations leave room for.
    const t = await app.tenant({ quotaMicros: 4_000 });
    const results = await Promise.all(
      Array.from({ length: 120 }, (_, i) => chat(app, t.key, { model: TEST_MODEL, messages: [{ role: 'user', content: `go ${i % 10}` }] })),
    );
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s !== 200 && s !== 429)).toEqual([]);
    const admitted = statuses.filter((s) => s === 200).length;
    expect(admitted).toBeGreaterThan(0);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0);

    await settled(db, t.tenantId);
    const rows: Array<{ status: string; reserved_micros: string; amount_micros: string }> = await db('billing_transaction').where({ tenant_id: t.tenantId, kind: 'usage' });
    expect(rows).toHaveLength(admitted);
    expect(rows.every((r) => r.status === 'committed')).toBe(true);
    const committed = rows.reduce((sum, r) => sum + Number(r.amount_micros), 0);

    // No overspend: the settled total never passes the limit.
    expect(committed).toBeLessThanOrEqual(4_000);
    // Exact balances: Redis counters == the ledger, for the tenant and its key.
    expect(await readTenantQuota(redis, t.tenantId)).toEqual({ limitMicros: 4_000, usedMicros: committed });
    expect(await readKeyBudget(redis, t.tenantId, t.apiKeyId)).toEqual({ budgetMicros: null, spentMicros: committed });
    expect(await ledgerUsage(db, t.tenantId)).toBe(committed);
  }, 120_000);

  it('never lets concurrent reservations pass the limit at any moment', async () => {
    // With everything concurrent, the peak of open reservations is what the limit bounds.
    const t = await app.tenant({ quotaMicros: 1_000 });
    const slow = Array.from({ length: 30 }, () =>
      chat(app, t.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'slow [mock:latency=200] [mock:tokens=30]' }] }),
    );
    const statuses = (await Promise.all(slow)).map((r) => r.status);
    await settled(db, t.tenantId);
    const reserved: Array<{ reserved_micros: string }> = await db('billing_transaction').where({ tenant_id: t.tenantId, kind: 'usage' });
    const perRequest = Number(reserved[0]!.reserved_micros);
    // Every admitted request reserved while the others were still open: all fit in the limit together.
    expect(statuses.filter((s) => s === 200).length).toBe(Math.floor(1_000 / perRequest));
    expect(statuses.filter((s) => s === 200).length * perRequest).toBeLessThanOrEqual(1_000);
  }, 60_000);

  it('bills one Idempotency-Key once when sent twice in a row, replaying the same answer', async () => {
    const t = await app.tenant();
    const body = { model: TEST_MODEL, messages: [{ role: 'user', content: 'once only' }] };
    const first = await chat(app, t.key, body, { 'Idempotency-Key': 'order-42' });
    await settled(db, t.tenantId);
    const second = await chat(app, t.key, body, { 'Idempotency-Key': 'order-42' });
    expect([first.status, second.status]).toEqual([200, 200]);
    expect(second.headers.get('x-request-id')).toBe(first.headers.get('x-request-id'));
    expect(second.json()).toEqual(first.json());
    const rows = await db('billing_transaction').where({ tenant_id: t.tenantId, kind: 'usage' });
    expect(rows).toHaveLength(1);
    expect(app.mock.stats().requests).toBeGreaterThan(0);
    expect((await readTenantQuota(redis, t.tenantId))?.usedMicros).toBe(Number(rows[0].amount_micros));
  });

  it('refuses a reused Idempotency-Key with a different body (409), billing only the first', async () => {
    const t = await app.tenant();
    const first = await chat(app, t.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'buy one' }] }, { 'Idempotency-Key': 'cart-7' });
    const other = await chat(app, t.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'buy ten' }] }, { 'Idempotency-Key': 'cart-7' });
    expect([first.status, other.status]).toEqual([200, 409]);
    expect((other.json() as { error: { code: string; message: string } }).error).toMatchObject({ code: 'conflict', message: expect.stringMatching(/different request body/) });
    await settled(db, t.tenantId);
    expect(await db('billing_transaction').where({ tenant_id: t.tenantId })).toHaveLength(1);
  });

  it('answers 409 for a repeated Idempotency-Key whose output has expired, billing nothing more', async () => {
    const t = await app.tenant();
    const body = { model: TEST_MODEL, messages: [{ role: 'user', content: 'long ago' }] };
    const first = await chat(app, t.key, body, { 'Idempotency-Key': 'old-order' });
    expect(first.status).toBe(200);
    await settled(db, t.tenantId);
    await redis.del(CacheKeys.requestStream(t.tenantId, first.headers.get('x-request-id')!)); // the relay's TTL ran out
    const again = await chat(app, t.key, body, { 'Idempotency-Key': 'old-order' });
    expect(again.status).toBe(409);
    expect((again.json() as { error: { code: string } }).error.code).toBe('conflict');
    expect(await db('billing_transaction').where({ tenant_id: t.tenantId })).toHaveLength(1);
  });

  it('bills one Idempotency-Key once when 10 copies of a streamed request arrive concurrently', async () => {
    const t = await app.tenant();
    const upstreamBefore = app.mock.stats().requests;
    const copies = await Promise.all(
      Array.from({ length: 10 }, () =>
        chat(app, t.key, { model: TEST_MODEL, stream: true, messages: [{ role: 'user', content: 'same request [mock:latency=5]' }] }, { 'Idempotency-Key': 'dup-1' }),
      ),
    );
    expect(copies.map((c) => c.status)).toEqual(Array(10).fill(200));
    // Every copy streamed the same output to its client.
    expect(new Set(copies.map((c) => c.text)).size).toBe(1);
    await settled(db, t.tenantId);
    const rows: Array<{ amount_micros: string }> = await db('billing_transaction').where({ tenant_id: t.tenantId, kind: 'usage' });
    expect(rows).toHaveLength(1);
    expect(app.mock.stats().requests - upstreamBefore).toBe(1);
    expect((await readTenantQuota(redis, t.tenantId))?.usedMicros).toBe(Number(rows[0]!.amount_micros));
    expect((await readKeyBudget(redis, t.tenantId, t.apiKeyId))?.spentMicros).toBe(Number(rows[0]!.amount_micros));
  }, 60_000);

  it('keeps two tenants that use the same Idempotency-Key apart', async () => {
    const a = await app.tenant();
    const b = await app.tenant();
    const body = { model: TEST_MODEL, messages: [{ role: 'user', content: 'mine' }] };
    const [ra, rb] = await Promise.all([chat(app, a.key, body, { 'Idempotency-Key': 'k' }), chat(app, b.key, body, { 'Idempotency-Key': 'k' })]);
    expect([ra.status, rb.status]).toEqual([200, 200]);
    expect(ra.headers.get('x-request-id')).not.toBe(rb.headers.get('x-request-id'));
    await settled(db, a.tenantId);
    await settled(db, b.tenantId);
    expect(await db('billing_transaction').where({ tenant_id: a.tenantId })).toHaveLength(1);
    expect(await db('billing_transaction').where({ tenant_id: b.tenantId })).toHaveLength(1);
  });
});
