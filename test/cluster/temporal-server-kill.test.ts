/**
 * A Temporal server process SIGKILLed under load (issue 13 item 4, M12 "nothing lost"): on a
 * cluster of two processes of its own (fresh databases on the test PostgreSQL, so the suite's
 * shared cluster is left whole), requests in flight when one process dies each end with exactly
 * one settled ledger row that bills what the client got, nothing stays pending, the Redis
 * counter equals the ledger to the micro, and the survivor serves new requests.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Knex } from 'knex';
import type { Redis } from '../../src/redis/client';
import { startTemporalCluster, type TemporalCluster } from '../../src/embedded/temporal-cluster';
import { readTenantQuota } from '../../src/redis/quota-cache';
import { startTestApp, TEST_MODEL, type TestApp } from '../helpers/app';
import { settled } from '../helpers/ledger';
import { testConfig, testDb, testRedis, uniqueId } from '../helpers/services';

interface Outcome {
  status: number;
  requestId: string | null;
  /** Streams: output deltas received. JSON: the completion tokens of the usage. */
  completionTokens: number;
  promptTokens?: number;
  /** The stream ended with an error event (the upstream call was cut). */
  streamError: boolean;
  /** The body of an answer other than 200, for the failure message. */
  error?: string;
}

interface Row { request_id: string; status: string; amount_micros: string; completion_tokens: number; prompt_tokens: number }

/** One attempt, read to its end: a stream counts the deltas it got, a JSON answer reports its usage. */
async function attempt(app: TestApp, key: string, stream: boolean, idempotencyKey: string): Promise<Outcome> {
  const res = await fetch(`${app.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'idempotency-key': idempotencyKey },
    body: JSON.stringify({ model: TEST_MODEL, stream, messages: [{ role: 'user', content: 'survive a server crash [mock:tokens=40] [mock:latency=50]' }] }),
  });
  const requestId = res.headers.get('x-request-id');
  const text = await res.text();
  if (res.status !== 200) return { status: res.status, requestId, completionTokens: 0, streamError: false, error: text };
  if (!stream) {
    const usage = (JSON.parse(text) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage;
    return { status: 200, requestId, completionTokens: usage.completion_tokens, promptTokens: usage.prompt_tokens, streamError: false };
  }
  const events = text.split('\n\n').filter((e) => e.startsWith('data: '));
  return {
    status: 200,
    requestId,
    completionTokens: events.filter((e) => e.includes('"delta"') && e.includes('"content"')).length,
    streamError: events.some((e) => e.includes('"error"')),
  };
}

/**
 * A request as a client that follows the API's contract sends it: a 503 says "retry with the same
 * Idempotency-Key", so it does, a few times; the retry attaches to the first run, never a second one.
 */
async function billedRequest(app: TestApp, key: string, stream: boolean): Promise<Outcome & { attempts: number }> {
  const idempotencyKey = uniqueId('kill');
  for (let attempts = 1; ; attempts++) {
    const outcome = await attempt(app, key, stream, idempotencyKey);
    if (outcome.status !== 503 || attempts === 4) return { ...outcome, attempts };
    await new Promise((r) => setTimeout(r, 1_000));
  }
}

describe('a Temporal server process killed under load (issue 13 item 4)', () => {
  let cluster: TemporalCluster;
  let app: TestApp;
  let db: Knex;
  let redis: Redis;
  let dir: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'temporal-kill-'));
    const pg = new URL(testConfig().DATABASE_URL!);
    const suffix = uniqueId('k').replace(/-/g, '_');
    cluster = await startTemporalCluster({
      rootDir: testConfig().rootDir,
      dir,
      postgres: { host: pg.hostname, port: Number(pg.port), user: decodeURIComponent(pg.username) },
      databases: { persistence: `temporal_${suffix}`, visibility: `temporal_visibility_${suffix}` },
      namespace: testConfig().TEMPORAL_NAMESPACE,
    });
    app = await startTestApp({ temporalAddress: cluster.address });
    db = testDb();
    redis = await testRedis();
  }, 180_000);

  afterAll(async () => {
    await app?.stop();
    await cluster?.stop();
    await db?.destroy();
    redis?.disconnect();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('settles every request in flight exactly once, and the survivor serves new ones', async () => {
    const t = await app.tenant({ quotaMicros: 1_000_000_000 });
    // Warm: both processes own shards and have served a request before the crash.
    expect((await billedRequest(app, t.key, false)).status).toBe(200);

    // 24 requests of about 2 s each (40 tokens, 50 ms apart), half streamed, in flight at the crash.
    const inFlight = Array.from({ length: 24 }, (_, i) => billedRequest(app, t.key, i % 2 === 0));
    await new Promise((r) => setTimeout(r, 700));
    const victim = cluster.servers[0]!;
    await victim.kill();
    expect(victim.process.child.signalCode).toBe('SIGKILL');
    const crashed = await Promise.all(inFlight);

    // The survivor, alone now, serves new requests.
    const after = await Promise.all(Array.from({ length: 6 }, (_, i) => billedRequest(app, t.key, i % 2 === 0)));
    expect(after.map((o) => o.status)).toEqual(Array(6).fill(200));

    // Every request ended with its answer and exactly one ledger row, settled; none is left pending.
    const all = [...crashed, ...after];
    expect(all.filter((o) => o.status !== 200)).toEqual([]);
    await settled(db, t.tenantId, 90_000);
    const rows: Row[] = await db('billing_transaction').where({ tenant_id: t.tenantId, kind: 'usage' });
    const byRequest = new Map(rows.map((r) => [r.request_id, r]));
    // The warm-up row, plus one per request (request_id is UNIQUE: never two).
    expect(rows).toHaveLength(all.length + 1);
    for (const o of all) {
      const row = byRequest.get(o.requestId!);
      // Billed what reached the client: 1 micro per prompt token, 2 per completion token.
      expect({ id: o.requestId, status: row?.status, completion: row?.completion_tokens })
        .toEqual({ id: o.requestId, status: 'committed', completion: o.completionTokens });
      expect(Number(row!.amount_micros)).toBe(row!.prompt_tokens + 2 * row!.completion_tokens);
      if (o.promptTokens !== undefined) expect(row!.prompt_tokens).toBe(o.promptTokens);
    }
    // Most requests outlive the crash whole: the workflows moved with their shards.
    expect(crashed.filter((o) => !o.streamError && o.completionTokens === 40).length).toBeGreaterThanOrEqual(12);
    process.stdout.write(`[kill] in flight: ${crashed.length}, whole: ${crashed.filter((o) => !o.streamError && o.completionTokens === 40).length}, retried after 503: ${crashed.filter((o) => o.attempts > 1).length}\n`);

    // The counter admission reads equals the ledger, to the micro.
    const committed = rows.filter((r) => r.status === 'committed').reduce((sum, r) => sum + Number(r.amount_micros), 0);
    expect((await readTenantQuota(redis, t.tenantId))?.usedMicros).toBe(committed);
  }, 240_000);
});
