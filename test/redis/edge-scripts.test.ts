/**
 * edge_admit.lua and edge_release.lua on the real Redis: the money filter reads only,
 * the GCRA limits are exact under concurrency across connections and count nothing a
 * refusal did not take, in-flight leases cap parallel requests and expire, and the
 * tokens-per-minute share settles from the estimate to the real count.
 */
import type { Redis } from '../../src/redis/client';
import { Registry } from 'prom-client';
import { UNLIMITED, type RequestLimits } from '../../src/edge/limits';
import { CacheKeys } from '../../src/redis/cache-keys';
import { createRedis } from '../../src/redis/client';
import { createEdgeScripts, type EdgeRequest, type EdgeScripts } from '../../src/redis/edge-scripts';
import { QuotaScriptName } from '../../src/redis/scripts';
import { testConfig, testRedis, uniqueId } from '../helpers/services';
import { quotaFixture, rawEval } from './quota-fixtures';

let redis: Redis;
let edge: EdgeScripts;
const LEASE_MS = 60_000;

beforeAll(async () => {
  redis = await testRedis();
  edge = createEdgeScripts(redis, { registry: new Registry() });
});

afterAll(() => {
  redis.disconnect();
});

function limits(tenant: Partial<RequestLimits['tenant']> = {}, key: Partial<RequestLimits['key']> = {}): RequestLimits {
  return { tenant: { ...UNLIMITED, ...tenant }, key: { ...UNLIMITED, ...key } };
}

async function fixture(opts: { limitMicros?: number; budgetMicros?: number | null } = {}) {
  const f = await quotaFixture(redis, { limitMicros: opts.limitMicros ?? 1_000_000_000, budgetMicros: opts.budgetMicros ?? null });
  const request = (l: RequestLimits, over: Partial<EdgeRequest> = {}): EdgeRequest => ({
    tenantId: f.tenantId,
    apiKeyId: f.apiKeyId,
    requestId: f.requestId(),
    estimateMicros: 100,
    estimateTokens: 10,
    limits: l,
    ...over,
  });
  return { ...f, request };
}

describe('edge_admit.lua: money (read only)', () => {
  it('refuses a tenant or a key short of the estimate and changes no counter', async () => {
    const f = await fixture({ limitMicros: 150, budgetMicros: 99 });
    const before = await redis.hgetall(f.quotaKey);

    expect((await edge.admit(f.request(limits(), { estimateMicros: 151 }), LEASE_MS)).status).toBe('insufficient_quota');
    expect((await edge.admit(f.request(limits(), { estimateMicros: 100 }), LEASE_MS)).status).toBe('budget_exceeded');
    expect((await edge.admit(f.request(limits(), { estimateMicros: 99 }), LEASE_MS)).status).toBe('admitted');
    // The edge never reserves: quota_check.lua does, in the workflow.
    expect(await redis.hgetall(f.quotaKey)).toEqual(before);
  });

  it('names a counter that is not cached, so the caller can warm it', async () => {
    const f = await fixture();
    await redis.del(f.budgetKey);
    expect((await edge.admit(f.request(limits()), LEASE_MS)).status).toBe('key_missing');
    await redis.del(f.quotaKey);
    expect((await edge.admit(f.request(limits()), LEASE_MS)).status).toBe('tenant_missing');
  });

  it('lets a request id that quota_check.lua already reserved through untouched (a retry), taking nothing', async () => {
    const f = await fixture({ limitMicros: 0 });
    const request = f.request(limits({ rpm: 1 }));
    await redis.hset(f.recordKey(request.requestId), 'reserved_micros', '100');

    const decision = await edge.admit(request, LEASE_MS);

    expect(decision.status).toBe('duplicate');
    expect(await redis.exists(CacheKeys.rateLimit(f.tenantId, 'rpm'))).toBe(0);
  });
});

describe('edge_admit.lua: GCRA rate limits', () => {
  it('admits exactly the limit of requests per minute under 200 concurrent calls on 4 connections, and reports the headers', async () => {
    const f = await fixture();
    const clients = await Promise.all([0, 1, 2, 3].map(async () => {
      const client = createRedis(testConfig().REDIS_URL!, { lazyConnect: true });
      await client.connect();
      return client;
    }));
    try {
      const runners = clients.map((c) => createEdgeScripts(c, { registry: new Registry() }));
      const l = limits({}, { rpm: 25 });
      const decisions = await Promise.all(Array.from({ length: 200 }, (_, i) => runners[i % 4]!.admit(f.request(l), LEASE_MS)));

      const admitted = decisions.filter((d) => d.status === 'admitted');
      expect(admitted).toHaveLength(25);
      expect(decisions.filter((d) => d.status === 'rate_limit_requests')).toHaveLength(175);
      // Every admitted answer names the limit, and the remaining counts are 24, 23, ... 0, each once.
      expect(admitted.map((d) => d.requests?.remaining).sort((a, b) => a! - b!)).toEqual(Array.from({ length: 25 }, (_, i) => i));
      expect(admitted.every((d) => d.requests?.limit === 25 && d.tokens === null)).toBe(true);
      // A refusal says when one unit comes back: 60 s / 25 = 2.4 s at most.
      const refused = decisions.find((d) => d.status === 'rate_limit_requests')!;
      expect(refused.retryAfterMs).toBeGreaterThan(0);
      expect(refused.retryAfterMs).toBeLessThanOrEqual(2_400);
      expect(refused.requests).toMatchObject({ limit: 25, remaining: 0 });
    } finally {
      for (const c of clients) c.disconnect();
    }
  });

  it('the tighter of tenant and key binds; a refusal takes no unit from either', async () => {
    const f = await fixture();
    const l = limits({ rpm: 3 }, { rpm: 100 });
    for (let i = 0; i < 3; i++) expect((await edge.admit(f.request(l), LEASE_MS)).status).toBe('admitted');
    const tenantTat = await redis.get(CacheKeys.rateLimit(f.tenantId, 'rpm'));
    const keyTat = await redis.get(CacheKeys.rateLimit(f.tenantId, 'rpm', f.apiKeyId));

    const refused = await edge.admit(f.request(l), LEASE_MS);

    expect(refused.status).toBe('rate_limit_requests');
    expect(refused.requests?.limit).toBe(3);
    expect(await redis.get(CacheKeys.rateLimit(f.tenantId, 'rpm'))).toBe(tenantTat);
    expect(await redis.get(CacheKeys.rateLimit(f.tenantId, 'rpm', f.apiKeyId))).toBe(keyTat);
  });

  it('a refusal for money takes no rate-limit unit', async () => {
    const f = await fixture({ limitMicros: 50 });
    const l = limits({}, { rpm: 1 });
    expect((await edge.admit(f.request(l, { estimateMicros: 51 }), LEASE_MS)).status).toBe('insufficient_quota');
    expect((await edge.admit(f.request(l, { estimateMicros: 50 }), LEASE_MS)).status).toBe('admitted');
  });

  it('counts tokens per minute at the estimate, and edge_release.lua settles them to the real count', async () => {
    const f = await fixture();
    const l = limits({}, { tpm: 1_000 });
    const first = f.request(l, { estimateTokens: 600 });
    expect((await edge.admit(first, LEASE_MS)).tokens).toMatchObject({ limit: 1_000, remaining: 400 });
    expect((await edge.admit(f.request(l, { estimateTokens: 600 }), LEASE_MS)).status).toBe('rate_limit_tokens');

    // The first request used 100 of its 600: 500 come back at once.
    await edge.release(first, 100);

    const second = await edge.admit(f.request(l, { estimateTokens: 600 }), LEASE_MS);
    expect(second.status).toBe('admitted');
    expect(second.tokens?.remaining).toBeGreaterThanOrEqual(299);
    expect(second.tokens?.remaining).toBeLessThanOrEqual(300);
  });

  it('a request larger than the tokens-per-minute limit is refused', async () => {
    const f = await fixture();
    const decision = await edge.admit(f.request(limits({ tpm: 100 }), { estimateTokens: 101 }), LEASE_MS);
    expect(decision.status).toBe('rate_limit_tokens');
    expect(decision.retryAfterMs).toBeGreaterThan(0);
  });
});

describe('edge_admit.lua: in-flight leases', () => {
  it('caps parallel requests per key and per tenant; a released lease frees its slot at once', async () => {
    const f = await fixture();
    const l = limits({ maxParallel: 5 }, { maxParallel: 2 });
    const a = f.request(l);
    const b = f.request(l);
    expect((await edge.admit(a, LEASE_MS)).status).toBe('admitted');
    expect((await edge.admit(b, LEASE_MS)).status).toBe('admitted');
    expect((await edge.admit(f.request(l), LEASE_MS)).status).toBe('parallel_requests');
    // The same request id again (a retry while in flight) keeps its slot.
    expect((await edge.admit({ ...a }, LEASE_MS)).status).toBe('admitted');

    await edge.release(a, 10);
    expect(await redis.zscore(CacheKeys.inflightLeases(f.tenantId, f.apiKeyId), a.requestId)).toBeNull();
    expect((await edge.admit(f.request(l), LEASE_MS)).status).toBe('admitted');
  });

  it('a lease nobody renews expires (a crashed API process frees its slots)', async () => {
    const f = await fixture();
    const l = limits({}, { maxParallel: 1 });
    expect((await edge.admit(f.request(l), 300)).status).toBe('admitted');
    expect((await edge.admit(f.request(l), 300)).status).toBe('parallel_requests');
    await new Promise((r) => setTimeout(r, 400));
    expect((await edge.admit(f.request(l), 300)).status).toBe('admitted');
  });

  it('renewing a lease keeps the slot past its first expiry', async () => {
    const f = await fixture();
    const l = limits({}, { maxParallel: 1 });
    const held = f.request(l);
    expect((await edge.admit(held, 300)).status).toBe('admitted');
    await new Promise((r) => setTimeout(r, 200));
    await edge.renewLeases(f.tenantId, f.apiKeyId, held.requestId, 300);
    await new Promise((r) => setTimeout(r, 200));
    expect((await edge.admit(f.request(l), 300)).status).toBe('parallel_requests');
  });
});

describe('edge scripts: malformed arguments are refused without writing', () => {
  it.each([
    ['a zero limit', ['100', '10', 'req', '1000', '0', '-1', '-1', '-1', '-1', '-1']],
    ['a fractional estimate', ['1.5', '10', 'req', '1000', '-1', '-1', '-1', '-1', '-1', '-1']],
    ['an empty request id', ['100', '10', '', '1000', '-1', '-1', '-1', '-1', '-1', '-1']],
    ['a zero lease', ['100', '10', 'req', '0', '-1', '-1', '-1', '-1', '-1', '-1']],
  ])('edge_admit.lua refuses %s', async (_label, argv) => {
    const tenantId = uniqueId('tenant');
    const keys = Array.from({ length: 9 }, (_, i) => `bq:{t:${tenantId}}:k${i}`);
    await expect(rawEval(redis, QuotaScriptName.edgeAdmit, keys, argv)).rejects.toThrow(/ERR/);
    expect(await redis.exists(...keys)).toBe(0);
  });
});
