/**
 * The script runner (M1.2, M13): load once and call by SHA, transparent reload after
 * SCRIPT FLUSH (what a Redis restart looks like to a client), reload and latency
 * metrics, pipelines, and the typed errors callers branch on.
 */
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import type { Redis } from '../../src/redis/client';
import { Counter, Histogram, Registry } from 'prom-client';
import {
  createQuotaScripts,
  parseReserveReply,
  LUA_DIR,
  QuotaScriptName,
  QuotaScriptRejectedError,
  UnexpectedScriptReplyError,
} from '../../src/redis/scripts';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../src/embedded/child';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../src/embedded/redis';
import { createRedis } from '../../src/redis/client';
import { luaSource, quotaFixture, TTL_SECONDS } from './quota-fixtures';

// A Redis of this file's own: SCRIPT FLUSH empties a server's whole script cache, and on the
// suite's shared Redis another test file's next call would put a script back before ours runs.
let server: EmbeddedRedis;
let dir: string;
let redis: Redis;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'scripts-runner-'));
  server = await startEmbeddedRedis({ port: await freePort(), dir, appendOnly: false });
  redis = createRedis(server.url, { lazyConnect: true });
  await redis.connect();
});

afterAll(async () => {
  await redis?.quit();
  await server?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function reloads(registry: Registry, script: QuotaScriptName): Promise<number> {
  const metric = await registry.getSingleMetric('billing_redis_script_reloads_total')!.get();
  return metric.values.find((v) => v.labels.script === script)?.value ?? 0;
}

async function durationCount(registry: Registry, script: QuotaScriptName): Promise<number> {
  const metric = await (registry.getSingleMetric('billing_redis_script_duration_seconds') as Histogram).get();
  return metric.values.find((v) => v.metricName === 'billing_redis_script_duration_seconds_count' && v.labels.script === script)?.value ?? 0;
}

describe('quota script runner (M1.2 load once, call by SHA, reload on NOSCRIPT)', () => {
  it('M1.2 load() puts every script in the Redis script cache', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1, budgetMicros: null });
    await redis.script('FLUSH');
    await f.scripts.load();
    const shas = Object.values(QuotaScriptName).map((name) => createHash('sha1').update(luaSource(name)).digest('hex'));
    // Every lua/*.lua script the runner calls: quota_limit_raise (top-ups) and the edge's included.
    expect(Object.values(QuotaScriptName).sort()).toEqual(readdirSync(LUA_DIR).filter((f) => f.endsWith('.lua')).map((f) => f.slice(0, -4)).sort());
    expect(await redis.script('EXISTS', ...shas)).toEqual(shas.map(() => 1));
  });

  it('M1.2 M13 reloads transparently after SCRIPT FLUSH, counts the reload and times every call', async () => {
    const f = await quotaFixture(redis, { limitMicros: 1_000_000, budgetMicros: null });
    await f.scripts.load();
    const args = { tenantId: f.tenantId, apiKeyId: f.apiKeyId, nowMs: 1, amountMicros: 1_000 };
    expect((await f.scripts.reserve({ ...args, requestId: f.requestId() })).status).toBe('reserved');
    expect(await reloads(f.registry, QuotaScriptName.quotaCheck)).toBe(0);

    await redis.script('FLUSH');
    const afterFlush = f.requestId();
    expect(await f.scripts.reserve({ ...args, requestId: afterFlush })).toEqual({
      status: 'reserved', reservedMicros: 1_000, tenantRemainingMicros: 998_000, keyRemainingMicros: null,
    });
    expect(await reloads(f.registry, QuotaScriptName.quotaCheck)).toBe(1);
    // Reloaded: the next call runs by SHA again without another reload.
    expect((await f.scripts.reserve({ ...args, requestId: f.requestId() })).status).toBe('reserved');
    expect(await reloads(f.registry, QuotaScriptName.quotaCheck)).toBe(1);
    // The retried call ran exactly once: used moved by 3 x 1,000, not 4.
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('3000');

    await redis.script('FLUSH');
    // Settled to a cost of 0: the 1,000 it reserved is refunded.
    expect(await f.scripts.settleTenant({ tenantId: f.tenantId, requestId: afterFlush, costMicros: 0 })).toEqual({
      status: 'applied', deltaMicros: -1_000, usedMicros: 2_000, remainingMicros: 998_000,
    });
    expect(await reloads(f.registry, QuotaScriptName.quotaDeduct)).toBe(1);
    // quotaFixture warmed twice (tenant, key); 3 reservations; 1 settlement.
    expect(await durationCount(f.registry, QuotaScriptName.cacheWarmup)).toBe(2);
    expect(await durationCount(f.registry, QuotaScriptName.quotaCheck)).toBe(3);
    expect(await durationCount(f.registry, QuotaScriptName.quotaDeduct)).toBe(1);
  });

  it('M13 a second runner on the same registry shares the metrics instead of registering twice', async () => {
    const registry = new Registry();
    const first = createQuotaScripts(redis, { ttlSeconds: TTL_SECONDS, registry });
    const second = createQuotaScripts(redis, { ttlSeconds: TTL_SECONDS, registry });
    const f = await quotaFixture(redis, { limitMicros: 100, budgetMicros: null });
    const args = { tenantId: f.tenantId, apiKeyId: f.apiKeyId, nowMs: 1, amountMicros: 1 };
    await first.reserve({ ...args, requestId: f.requestId() });
    await second.reserve({ ...args, requestId: f.requestId() });
    expect(registry.getSingleMetric('billing_redis_script_duration_seconds')).toBeInstanceOf(Histogram);
    expect(registry.getSingleMetric('billing_redis_script_reloads_total')).toBeInstanceOf(Counter);
    expect(await durationCount(registry, QuotaScriptName.quotaCheck)).toBe(2);
  });

  it('M2.1 reserveInPipeline queues EVALSHA calls whose replies parse like reserve()', async () => {
    const f = await quotaFixture(redis, { limitMicros: 25, budgetMicros: null });
    await f.scripts.load();
    const pipeline = redis.pipeline();
    const requestIds = Array.from({ length: 6 }, () => f.requestId());
    for (const requestId of requestIds) {
      f.scripts.reserveInPipeline(pipeline, { tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId, amountMicros: 5, nowMs: 1 });
    }
    // The same request id again at the end of the batch: still one reservation.
    f.scripts.reserveInPipeline(pipeline, { tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: requestIds[0]!, amountMicros: 5, nowMs: 1 });
    const replies = (await pipeline.exec()) ?? [];
    const statuses = replies.map(([err, reply]) => {
      expect(err).toBeNull();
      return parseReserveReply(reply).status;
    });
    expect(statuses).toEqual(['reserved', 'reserved', 'reserved', 'reserved', 'reserved', 'insufficient_quota', 'duplicate']);
    expect(await redis.hget(f.quotaKey, 'used_micros')).toBe('25');
  });

  it('M1.2 an error answered by Redis becomes QuotaScriptRejectedError naming the script', async () => {
    const f = await quotaFixture(redis, { limitMicros: 100, budgetMicros: null });
    await redis.del(f.quotaKey);
    await redis.set(f.quotaKey, 'not a hash');
    const attempt = f.scripts.reserve({ tenantId: f.tenantId, apiKeyId: f.apiKeyId, requestId: f.requestId(), amountMicros: 1, nowMs: 1 });
    await expect(attempt).rejects.toThrow(QuotaScriptRejectedError);
    await expect(attempt).rejects.toThrow(/^quota_check: .*WRONGTYPE/);
  });

  it('M1.2 a reply of the wrong shape is refused instead of being guessed at', () => {
    expect(() => parseReserveReply(['reserved', 1, 2])).toThrow(UnexpectedScriptReplyError);
    expect(() => parseReserveReply(['approved', 1, 2, 3])).toThrow(UnexpectedScriptReplyError);
    expect(() => parseReserveReply(['reserved', '1', 2, 3])).toThrow(UnexpectedScriptReplyError);
    expect(() => parseReserveReply('OK')).toThrow(UnexpectedScriptReplyError);
    expect(parseReserveReply(['budget_exceeded', 0, 7, 3])).toEqual({ status: 'budget_exceeded', tenantRemainingMicros: 7, keyRemainingMicros: 3 });
  });
});
