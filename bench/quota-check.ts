/**
 * quota_check benchmark (M11, issue 2): admission latency one call at a time and
 * throughput with pipelining, through the same runner the product uses.
 *
 *   npx tsx bench/quota-check.ts [--sequential 20000] [--pipelined 200000] [--batch 250]
 *
 * Uses REDIS_URL when it is set (its keys are removed afterwards), otherwise starts a
 * throwaway redis-server on a free port and kills it at the end. Targets: P99 < 1 ms one
 * at a time, > 20,000 reservations/s pipelined; the exit code is 1 when one is missed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { parseArgs } from 'node:util';
import { Registry } from 'prom-client';
import { loadConfig } from '../src/config';
import { CacheKeys } from '../src/redis/cache-keys';
import { createRedis, type Redis } from '../src/redis/client';
import { readTenantQuota } from '../src/redis/quota-cache';
import { createQuotaScripts, parseReserveReply, type QuotaScripts } from '../src/redis/scripts';

const AMOUNT_MICROS = 1_000;
const TARGET_P99_MS = 1;
const TARGET_PIPELINED_PER_SECOND = 20_000;

const { values: cli } = parseArgs({
  options: {
    sequential: { type: 'string', default: '20000' },
    pipelined: { type: 'string', default: '200000' },
    batch: { type: 'string', default: '250' },
  },
});
const SEQUENTIAL_CALLS = Number(cli.sequential);
const PIPELINED_CALLS = Number(cli.pipelined);
const BATCH_SIZE = Number(cli.batch);

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function connectWithRetry(url: string, attempts = 50): Promise<Redis> {
  for (let attempt = 1; ; attempt++) {
    const redis = createRedis(url, { lazyConnect: true });
    // Failures surface through connect()'s rejection; without a listener ioredis would also print them.
    redis.on('error', () => undefined);
    try {
      await redis.connect();
      return redis;
    } catch (err) {
      redis.disconnect();
      if (attempt >= attempts) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** A throwaway, non-persistent redis-server, so the numbers do not depend on AOF fsync settings. */
async function startThrowawayRedis(): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  child.once('error', (err) => {
    console.error(`could not start redis-server: ${err.message}`);
  });
  return { url: `redis://127.0.0.1:${port}`, child };
}

function percentile(sortedNs: BigInt64Array, p: number): number {
  const index = Math.min(sortedNs.length - 1, Math.ceil((p / 100) * sortedNs.length) - 1);
  return Number(sortedNs[Math.max(0, index)]) / 1e6;
}

interface SequentialFigures {
  callsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

async function measureSequential(scripts: QuotaScripts, tenantId: string, apiKeyId: string): Promise<SequentialFigures> {
  const reserve = (i: number, prefix: string) =>
    scripts.reserve({ tenantId, apiKeyId, requestId: `${prefix}-${i}`, amountMicros: AMOUNT_MICROS, nowMs: Date.now() });
  // Let the JIT and the connection settle before measuring.
  for (let i = 0; i < 1_000; i++) await reserve(i, 'warm');

  const latencies = new BigInt64Array(SEQUENTIAL_CALLS);
  const started = process.hrtime.bigint();
  for (let i = 0; i < SEQUENTIAL_CALLS; i++) {
    const t0 = process.hrtime.bigint();
    const result = await reserve(i, 'seq');
    latencies[i] = process.hrtime.bigint() - t0;
    if (result.status !== 'reserved') throw new Error(`sequential call ${i} was ${result.status}`);
  }
  const elapsedS = Number(process.hrtime.bigint() - started) / 1e9;
  latencies.sort();
  return {
    callsPerSecond: SEQUENTIAL_CALLS / elapsedS,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: Number(latencies[latencies.length - 1]) / 1e6,
  };
}

async function measurePipelined(redis: Redis, scripts: QuotaScripts, tenantId: string, apiKeyId: string): Promise<number> {
  const started = process.hrtime.bigint();
  for (let offset = 0; offset < PIPELINED_CALLS; offset += BATCH_SIZE) {
    const pipeline = redis.pipeline();
    const size = Math.min(BATCH_SIZE, PIPELINED_CALLS - offset);
    for (let i = 0; i < size; i++) {
      scripts.reserveInPipeline(pipeline, { tenantId, apiKeyId, requestId: `pipe-${offset + i}`, amountMicros: AMOUNT_MICROS, nowMs: Date.now() });
    }
    const replies = (await pipeline.exec()) ?? [];
    for (const [err, reply] of replies) {
      if (err) throw err;
      const { status } = parseReserveReply(reply);
      if (status !== 'reserved') throw new Error(`pipelined call was ${status}`);
    }
  }
  return PIPELINED_CALLS / (Number(process.hrtime.bigint() - started) / 1e9);
}

/** Removes the benchmark tenant's keys from a shared Redis (they all carry its hash tag). */
async function removeTenantKeys(redis: Redis, tenantId: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `*${CacheKeys.hashTag(tenantId)}*`, 'COUNT', 1000);
    if (keys.length > 0) await redis.unlink(...keys);
    cursor = next;
  } while (cursor !== '0');
}

function row(label: string, value: string, target = ''): string {
  return `| ${label.padEnd(34)} | ${value.padStart(12)} | ${target.padEnd(22)} |`;
}

async function run(redis: Redis, source: string): Promise<void> {
  const tenantId = `bench-${process.pid}-${Date.now().toString(36)}`;
  const apiKeyId = 'bench-key';
  const scripts = createQuotaScripts(redis, { ttlSeconds: 3600, registry: new Registry() });
  await scripts.load();
  await scripts.warmTenant(tenantId, { limitMicros: 9_000_000_000_000_000, usedMicros: 0 });
  await scripts.warmKey(tenantId, apiKeyId, { budgetMicros: null, spentMicros: 0 });
  try {
    const sequential = await measureSequential(scripts, tenantId, apiKeyId);
    const pipelinedPerSecond = await measurePipelined(redis, scripts, tenantId, apiKeyId);

    // The counters must be exact after every call: 1,000 warm-up + sequential + pipelined.
    const expectedUsed = (1_000 + SEQUENTIAL_CALLS + PIPELINED_CALLS) * AMOUNT_MICROS;
    const quota = await readTenantQuota(redis, tenantId);
    if (quota?.usedMicros !== expectedUsed) throw new Error(`used_micros ${quota?.usedMicros} != ${expectedUsed}`);

    const p99Ok = sequential.p99Ms < TARGET_P99_MS;
    const throughputOk = pipelinedPerSecond > TARGET_PIPELINED_PER_SECOND;
    const redisVersion = /redis_version:(\S+)/.exec(await redis.info('server'))?.[1] ?? '?';
    console.log(`quota_check benchmark: node ${process.version}, redis ${redisVersion} (${source})`);
    console.log(row('measure', 'value', 'target'));
    console.log(row('-'.repeat(34), '-'.repeat(12), '-'.repeat(22)));
    console.log(row(`sequential calls (${SEQUENTIAL_CALLS})`, `${sequential.callsPerSecond.toFixed(0)}/s`));
    console.log(row('sequential P50', `${sequential.p50Ms.toFixed(3)} ms`));
    console.log(row('sequential P99', `${sequential.p99Ms.toFixed(3)} ms`, `< ${TARGET_P99_MS} ms ${p99Ok ? 'PASS' : 'FAIL'}`));
    console.log(row('sequential max', `${sequential.maxMs.toFixed(3)} ms`));
    console.log(
      row(`pipelined (${PIPELINED_CALLS}, batch ${BATCH_SIZE})`, `${pipelinedPerSecond.toFixed(0)}/s`, `> ${TARGET_PIPELINED_PER_SECOND}/s ${throughputOk ? 'PASS' : 'FAIL'}`),
    );
    console.log(row('used_micros after run (exact)', String(quota.usedMicros)));
    if (!p99Ok || !throughputOk) process.exitCode = 1;
  } finally {
    // On a shared Redis, leave nothing behind; a throwaway server is killed anyway.
    await removeTenantKeys(redis, tenantId);
  }
}

async function main(): Promise<void> {
  const configured = loadConfig().REDIS_URL;
  const throwaway = configured ? undefined : await startThrowawayRedis();
  try {
    const redis = await connectWithRetry(configured ?? throwaway!.url);
    try {
      await run(redis, configured ? 'REDIS_URL' : 'throwaway redis-server');
    } finally {
      redis.disconnect();
    }
  } finally {
    throwaway?.child.kill('SIGTERM');
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
