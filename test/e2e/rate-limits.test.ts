/**
 * Rate limits at the edge on the real stack, across two API processes sharing one
 * worker (M2, M12): requests and tokens per minute and parallel requests are exact
 * under 200 concurrent requests, refusals are 429 rate_limit_exceeded with Retry-After
 * and OpenAI's x-ratelimit-* headers, a PATCH binds the next request, bad limits are
 * refused with 400 and change nothing, and the official `openai` client's own retries
 * get through once the limit allows.
 */
import OpenAI from 'openai';
import type { Knex } from 'knex';
import type { Redis } from '../../src/redis/client';
import { chat, startTestApp, TEST_MODEL, type TestApp } from '../helpers/app';
import { settled } from '../helpers/ledger';
import { testDb, testRedis, uniqueId } from '../helpers/services';
import { CacheKeys } from '../../src/redis/cache-keys';

interface ErrorBody { error: { code: string; type: string; message: string } }

const ask = (text = 'hello') => ({ model: TEST_MODEL, messages: [{ role: 'user' as const, content: text }] });

describe('rate limits across two API processes', () => {
  const taskQueue = uniqueId('rate-limits');
  let a: TestApp;
  let b: TestApp;
  let db: Knex;
  let redis: Redis;
  beforeAll(async () => {
    a = await startTestApp({ taskQueue });
    b = await startTestApp({ taskQueue, workers: false });
    db = testDb();
    redis = await testRedis();
  }, 90_000);
  afterAll(async () => {
    await b?.stop();
    await a?.stop();
    await db?.destroy();
    redis?.disconnect();
  });

  /** A tenant whose key carries `limits`, created through the contract. */
  async function limitedKey(limits: Record<string, number>, tenantLimits: Record<string, number> = {}): Promise<{ tenantId: string; key: string; id: string }> {
    const tenantId = uniqueId('tenant');
    expect((await a.admin('POST', '/admin/tenants', { id: tenantId, name: tenantId, quota_limit_micros: 100_000_000, ...tenantLimits })).status).toBe(201);
    const k = await a.admin<{ id: string; key: string }>('POST', `/admin/tenants/${tenantId}/api-keys`, { name: 'limited', ...limits });
    expect(k.status).toBe(201);
    return { tenantId, key: k.body.key, id: k.body.id };
  }

  /** 200 concurrent requests, alternating between the two API processes. */
  const flood = (key: string, text?: string) => Promise.all(Array.from({ length: 200 }, (_, i) => chat(i % 2 ? b : a, key, ask(text))));

  const committedRows = async (tenantId: string): Promise<number> => {
    await settled(db, tenantId);
    return (await db('billing_transaction').where({ tenant_id: tenantId, kind: 'usage', status: 'committed' })).length;
  };

  it('requests per minute: exactly the limit of 200 concurrent requests pass, the rest get 429 with Retry-After and the headers', async () => {
    const t = await limitedKey({ rpm_limit: 10 });
    const started = Date.now();
    const responses = await flood(t.key);
    const ok = responses.filter((r) => r.status === 200);
    const refused = responses.filter((r) => r.status === 429);

    // GCRA emits one request every 6 s at 10/min after the burst of 10: a flood that fits in one
    // emission interval passes exactly 10; a slower one (a loaded machine) at most one more per 6 s.
    const emitted = Math.floor((Date.now() - started) / 6_000);
    expect(ok.length).toBeGreaterThanOrEqual(10);
    expect(ok.length).toBeLessThanOrEqual(10 + emitted);
    expect(refused).toHaveLength(200 - ok.length);
    for (const r of refused) {
      const body = r.json() as ErrorBody;
      expect(body.error.code).toBe('rate_limit_exceeded');
      expect(body.error.type).toBe('requests');
      expect(body.error.message).toMatch(/requests per minute/);
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(Number(r.headers.get('retry-after-ms'))).toBeGreaterThan(0);
      expect(r.headers.get('x-ratelimit-remaining-requests')).toBe('0');
    }
    for (const r of responses) expect(r.headers.get('x-ratelimit-limit-requests')).toBe('10');
    // The burst's ten see 9 down to 0 remaining; one emitted later sees 0 again.
    expect(ok.map((r) => Number(r.headers.get('x-ratelimit-remaining-requests'))).sort((x, y) => x - y).slice(-10)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(ok[0]!.headers.get('x-ratelimit-reset-requests')).toMatch(/^\d+(ms|(\.\d)?s|m\d+s)$/);
    expect(await committedRows(t.tenantId)).toBe(ok.length);
  });

  it('tokens per minute: counted at the estimate while in flight; exactly as many pass as the limit holds', async () => {
    // The mock reports the gateway's own prompt count, so one request's estimate is prompt + the output cap (64).
    const probe = await a.tenant();
    const sample = (await chat(a, probe.key, ask('slow [mock:latency=300]'))).json() as { usage: { prompt_tokens: number } };
    const estimate = sample.usage.prompt_tokens + 64;
    const t = await limitedKey({ tpm_limit: 3 * estimate + Math.floor(estimate / 2) });

    const responses = await flood(t.key, 'slow [mock:latency=300]');

    expect(responses.filter((r) => r.status === 200)).toHaveLength(3);
    const refused = responses.filter((r) => r.status === 429);
    expect(refused).toHaveLength(197);
    expect(refused.every((r) => (r.json() as ErrorBody).error.type === 'tokens')).toBe(true);
    expect(responses[0]!.headers.get('x-ratelimit-limit-tokens')).toBe(String(3 * estimate + Math.floor(estimate / 2)));
    expect(await committedRows(t.tenantId)).toBe(3);
  });

  it('parallel requests: exactly max_parallel_requests are in flight at once, across both processes', async () => {
    const t = await limitedKey({}, { max_parallel_requests: 3 });
    const responses = await flood(t.key, 'slow [mock:latency=300]');

    expect(responses.filter((r) => r.status === 200)).toHaveLength(3);
    const refused = responses.filter((r) => r.status === 429);
    expect(refused).toHaveLength(197);
    expect(refused.every((r) => /parallel requests \(limit 3\)/.test((r.json() as ErrorBody).error.message))).toBe(true);
    expect(await committedRows(t.tenantId)).toBe(3);
    // The leases were given back: the next request passes.
    expect((await chat(b, t.key, ask())).status).toBe(200);
    expect(await redis.zcard(CacheKeys.inflightLeases(t.tenantId))).toBe(0);
  });

  it('a PATCH of a key or a tenant binds the next request, on every API process', async () => {
    const t = await limitedKey({});
    expect((await chat(a, t.key, ask())).headers.get('x-ratelimit-limit-requests')).toBeNull();

    const patched = await a.admin<Record<string, unknown>>('PATCH', `/admin/api-keys/${t.id}`, { rpm_limit: 1 });
    expect(patched.status).toBe(200);
    expect(patched.body).toMatchObject({ id: t.id, rpm_limit: 1, tpm_limit: null, max_parallel_requests: null });
    expect((await chat(b, t.key, ask())).status).toBe(200);
    expect((await chat(a, t.key, ask())).status).toBe(429);

    // Clearing the key's limit and setting the tenant's: the tenant's binds its keys.
    expect((await a.admin('PATCH', `/admin/api-keys/${t.id}`, { rpm_limit: null })).status).toBe(200);
    const tenant = await a.admin<Record<string, unknown>>('PATCH', `/admin/tenants/${t.tenantId}`, { max_parallel_requests: 1 });
    expect(tenant.body).toMatchObject({ id: t.tenantId, rpm_limit: null, max_parallel_requests: 1 });
    const [first, second] = await Promise.all([chat(a, t.key, ask('slow [mock:latency=100]')), chat(b, t.key, ask('slow [mock:latency=100]'))]);
    expect([first.status, second.status].sort()).toEqual([200, 429]);
  });

  it.each([
    ['a negative limit', { rpm_limit: -1 }],
    ['zero', { tpm_limit: 0 }],
    ['a fraction', { max_parallel_requests: 1.5 }],
    ['a string', { rpm_limit: '10' }],
    ['an absurd value', { tpm_limit: 1e20 }],
    ['no limit at all', {}],
    ['an unknown field', { rpm: 10 }],
  ])('refuses %s with 400 and changes nothing', async (_label, body) => {
    const t = await limitedKey({ rpm_limit: 5 });
    const before = (await a.admin('GET', `/admin/api-keys/${t.id}`)).body;

    const key = await a.admin<ErrorBody>('PATCH', `/admin/api-keys/${t.id}`, body);
    const tenant = await a.admin<ErrorBody>('PATCH', `/admin/tenants/${t.tenantId}`, body);

    expect(key.status).toBe(400);
    expect(key.body.error.type).toBe('invalid_request_error');
    expect(tenant.status).toBe(400);
    expect((await a.admin('GET', `/admin/api-keys/${t.id}`)).body).toEqual(before);
    if (Object.keys(body).length > 0) {
      const id = uniqueId('tenant');
      expect((await a.admin('POST', '/admin/tenants', { id, name: id, quota_limit_micros: 1, ...body })).status).toBe(400);
      expect((await a.admin('GET', `/admin/tenants/${id}`)).status).toBe(404);
    }
  });

  it('the official openai client retries a 429 by its Retry-After and gets through, billed once', async () => {
    const t = await limitedKey({ rpm_limit: 60 });
    // The key has used its whole minute: its GCRA state is one minute ahead of Redis' clock.
    const [seconds, micros] = await redis.time();
    const nowUs = Number(seconds) * 1_000_000 + Number(micros);
    await redis.set(CacheKeys.rateLimit(t.tenantId, 'rpm', t.id), String(nowUs + 60_000_000), 'PX', 61_000);

    const client = new OpenAI({ apiKey: t.key, baseURL: `${a.url}/v1`, maxRetries: 2 });
    const started = Date.now();
    const completion = await client.chat.completions.create(ask());

    expect(completion.choices[0]?.message.content).toBeTruthy();
    // One request per second comes back: the client waited for it instead of failing.
    expect(Date.now() - started).toBeGreaterThanOrEqual(800);
    expect(await committedRows(t.tenantId)).toBe(1);
  });
});
