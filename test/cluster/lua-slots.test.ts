/**
 * Every Lua script touches one slot (issue 13 item 3): each script of the registry
 * (QuotaScriptName, i.e. every lua/*.lua) is called through the project's own wrappers, with
 * the keys production builds, for tenants on each of the three masters of a real Redis Cluster.
 * The cluster refuses a script whose keys span slots (CROSSSLOT) or that touches an undeclared
 * key of another slot, so any such script fails here. The script metrics of one Registry show
 * that every script of the registry ran: a new script without a case below fails the test.
 */
import pino from 'pino';
import { Registry, type Histogram } from 'prom-client';
import type { Cluster } from 'ioredis';
import { createDistributedLock } from '../../src/locks/distributed-lock';
import { createLockMetrics } from '../../src/metrics';
import { duplicateRedis } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';
import { createEdgeScripts, EdgeStatus } from '../../src/redis/edge-scripts';
import { keySlot } from '../../src/redis/key-slot';
import { createQuotaScripts, luaScript, QuotaScriptName } from '../../src/redis/scripts';
import { createScriptRunner } from '../../src/redis/script-runner';
import { readCounters } from '../../src/consistency/counter-reader';
import { SubjectKind } from '../../src/consistency/ledger-figures';
import type { RequestLimits } from '../../src/edge/limits';
import { masterOf, startTestRedisCluster, tenantsOnEveryMaster, type TestRedisCluster } from '../helpers/redis-cluster';
import { uniqueId } from '../helpers/services';

const LIMITS: RequestLimits = {
  tenant: { rpm: 1000, tpm: 1_000_000, maxParallel: 10 },
  key: { rpm: 1000, tpm: 1_000_000, maxParallel: 10 },
};

async function callsPerScript(registry: Registry): Promise<Map<string, number>> {
  const metric = await (registry.getSingleMetric('billing_redis_script_duration_seconds') as Histogram).get();
  const calls = new Map<string, number>();
  for (const v of metric.values) {
    if (v.metricName === 'billing_redis_script_duration_seconds_count') calls.set(String(v.labels.script), v.value);
  }
  return calls;
}

describe('Redis Cluster: every Lua script stays in one slot (issue 13 item 3)', () => {
  let t: TestRedisCluster;
  let redis: Cluster;

  beforeAll(async () => {
    t = await startTestRedisCluster();
    redis = t.redis;
  }, 120_000);

  afterAll(async () => {
    await t?.stop();
  });

  it('the cluster refuses a script whose keys span slots (what this suite would catch)', async () => {
    const [a, b] = tenantsOnEveryMaster(redis, 1);
    const { source } = luaScript(QuotaScriptName.quotaLimitRaise);
    await expect(redis.eval(source, 2, CacheKeys.tenantQuota(a!), CacheKeys.tenantQuota(b!), '1')).rejects.toThrow(/CROSSSLOT/);
  });

  it('runs every script of the registry for tenants on all three masters, none refused, and the counters add up', async () => {
    const registry = new Registry();
    const scripts = createQuotaScripts(redis, { ttlSeconds: 3600, registry });
    const edge = createEdgeScripts(redis, { registry });
    const subscriber = duplicateRedis(redis, { enableOfflineQueue: true });
    subscriber.on('error', () => undefined);
    const lock = createDistributedLock(
      { redis, subscriber, run: createScriptRunner(redis, registry), metrics: createLockMetrics(registry), log: pino({ level: 'silent' }) },
      { ttlMs: 300 },
    );
    const tenants = tenantsOnEveryMaster(redis, 2);
    expect(new Set(tenants.map((id) => masterOf(redis, CacheKeys.tenantQuota(id)))).size).toBe(3);

    for (const tenantId of tenants) {
      const apiKeyId = uniqueId('key');
      const windowId = `t:${tenantId}:day:2026-12-01T00:00:00.000Z`;
      const [r1, r2, r3] = [uniqueId('req'), uniqueId('req'), uniqueId('req')];
      const request = { tenantId, apiKeyId, nowMs: Date.now() };

      // cache_warmup (create), window_warmup
      expect(await scripts.warmTenant(tenantId, { limitMicros: 1_000_000, usedMicros: 0 })).toBe(true);
      expect(await scripts.warmKey(tenantId, apiKeyId, { budgetMicros: 500_000, spentMicros: 0 })).toBe(true);
      expect(await scripts.warmWindow({ tenantId, windowId, usedMicros: 0, pending: [], expireAtMs: Date.now() + 3_600_000 })).toBe(true);

      // edge_admit, quota_check (with a window), then settlement on every counter
      const admitted = await edge.admit({ tenantId, apiKeyId, requestId: r1, estimateMicros: 1_000, estimateTokens: 100, limits: LIMITS }, 30_000);
      expect(admitted.status).toBe(EdgeStatus.admitted);
      const reserved = await scripts.reserveWithWindows({ ...request, requestId: r1, amountMicros: 1_000 }, [{ windowId, limitMicros: 100_000, subject: 'tenant' }]);
      expect(reserved.status).toBe('reserved');
      expect(await scripts.settleTenant({ tenantId, requestId: r1, costMicros: 600 })).toMatchObject({ status: 'applied', deltaMicros: -400, usedMicros: 600 });
      expect(await scripts.settleKeyBudget({ tenantId, apiKeyId, requestId: r1, costMicros: 600 })).toMatchObject({ status: 'applied', deltaMicros: -400 });
      expect(await scripts.settleWindows({ tenantId, requestId: r1, windowIds: [windowId], costMicros: 600 })).toEqual([-400]);
      await edge.release({ tenantId, apiKeyId, requestId: r1, estimateTokens: 100, limits: LIMITS }, 80);
      await edge.renewLeases(tenantId, apiKeyId, r1, 30_000);

      // quota_release of a fresh reservation; quota_limit_raise
      expect((await scripts.reserve({ ...request, requestId: r2, amountMicros: 2_000 })).status).toBe('reserved');
      expect(await scripts.release({ tenantId, apiKeyId, requestId: r2 })).toEqual({ status: 'released', releasedMicros: 2_000 });
      expect(await scripts.raiseTenantLimit(tenantId, 2_000_000)).toEqual({ status: 'raised', limitMicros: 2_000_000 });

      // cache_warmup (replace, the heal) with request records among its keys
      expect((await scripts.reserve({ ...request, requestId: r3, amountMicros: 300 })).status).toBe('reserved');
      const [tenantReading, keyReading] = await readCounters(redis, [
        { kind: SubjectKind.tenant, tenantId, apiKeyId: null },
        { kind: SubjectKind.apiKey, tenantId, apiKeyId },
      ]);
      const marks = { pending: [{ requestId: r3, reservedMicros: 300 }], recentlySettled: [{ requestId: r1, costMicros: 600 }] };
      expect(await scripts.replaceTenant(tenantId, { limitMicros: 2_000_000, usedMicros: 900 }, marks, tenantReading!.token)).toBe(true);
      expect(await scripts.replaceKey(tenantId, apiKeyId, { budgetMicros: 500_000, spentMicros: 900 }, marks, keyReading!.token)).toBe(true);
      expect(await scripts.warmWindow({ tenantId, windowId: `${windowId}:next`, usedMicros: 300, pending: [{ requestId: r3, reservedMicros: 300 }], expireAtMs: Date.now() + 3_600_000 })).toBe(true);
      expect(await scripts.settleTenant({ tenantId, requestId: r3, costMicros: 300 })).toMatchObject({ status: 'applied', deltaMicros: 0, usedMicros: 900 });

      const [tenantAfter, keyAfter] = await readCounters(redis, [
        { kind: SubjectKind.tenant, tenantId, apiKeyId: null },
        { kind: SubjectKind.apiKey, tenantId, apiKeyId },
      ]);
      expect(tenantAfter?.usedMicros).toBe(900);
      expect(keyAfter?.usedMicros).toBe(900);
      expect(await redis.hget(CacheKeys.budgetWindow(tenantId, windowId), 'used_micros')).toBe('600');
    }

    // lock_acquire, lock_extend (the watchdog, every ttl/3), lock_release, which publishes the
    // release: the cluster broadcasts it, so a subscriber on whatever node hears it.
    const listener = duplicateRedis(redis, { enableOfflineQueue: true });
    listener.on('error', () => undefined);
    const heard: string[] = [];
    listener.on('message', (channel: string) => heard.push(channel));
    for (let i = 0; i < 6; i++) {
      const conversationId = uniqueId('conv');
      await listener.subscribe(CacheKeys.conversationLockReleased(conversationId));
      const held = await lock.acquire(conversationId, { info: 'slots test' });
      await new Promise((r) => setTimeout(r, 250));
      const waiter = lock.acquire(conversationId, { waitMs: 10_000 });
      expect(await held.release()).toBe(true);
      const next = await waiter;
      expect(next.fence).toBeGreaterThan(held.fence);
      expect(held.lost.aborted).toBe(false);
      expect(await next.release()).toBe(true);
      for (let wait = 0; wait < 50 && heard.filter((c) => c === CacheKeys.conversationLockReleased(conversationId)).length < 2; wait++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(heard.filter((c) => c === CacheKeys.conversationLockReleased(conversationId))).toHaveLength(2);
      expect(keySlot(CacheKeys.conversationLockFence(conversationId))).toBe(keySlot(CacheKeys.conversationLock(conversationId)));
    }
    listener.disconnect();
    subscriber.disconnect();

    const calls = await callsPerScript(registry);
    const missing = Object.values(QuotaScriptName).filter((name) => (calls.get(name) ?? 0) === 0);
    expect(missing).toEqual([]);
  });

  it('the slot the project computes is the one the cluster computes, for every kind of key', async () => {
    const tenantId = uniqueId('tenant');
    const keys = [
      CacheKeys.tenantQuota(tenantId), CacheKeys.apiKeyBudget(tenantId, 'k'), CacheKeys.request(tenantId, 'r'),
      CacheKeys.budgetWindow(tenantId, 'w'), CacheKeys.requestStream(tenantId, 'r'), CacheKeys.rateLimit(tenantId, 'rpm', 'k'),
      CacheKeys.inflightLeases(tenantId), CacheKeys.conversationLock('c1'), CacheKeys.conversationAffinity('c1'),
      CacheKeys.channelFailures('ch'), CacheKeys.apiKeyLookup('hash'), CacheKeys.codecSessionRevoked('s'), 'plain', '{}x', 'a{}{b}',
    ];
    for (const key of keys) expect([key, keySlot(key)]).toEqual([key, await redis.cluster('KEYSLOT', key)]);
    // One tenant's keys share one slot; a conversation's lock and affinity share theirs.
    expect(new Set(keys.slice(0, 7).map(keySlot)).size).toBe(1);
    expect(keySlot(CacheKeys.conversationLock('c1'))).toBe(keySlot(CacheKeys.conversationAffinity('c1')));
  });
});
