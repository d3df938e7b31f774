/**
 * Fault recovery (M10.2, M12 "nothing lost"): a client that goes away mid-stream,
 * and a worker killed with SIGKILL mid-stream and restarted. Each request ends
 * with exactly one committed ledger row that bills what reached the client.
 */
import type { Knex } from 'knex';
import type { Redis } from '../../src/redis/client';
import { startTestApp, TEST_MODEL, type TestApp } from '../helpers/app';
import { bodyRowsAfterSettlement, settled } from '../helpers/ledger';
import { testDb, testRedis, uniqueId } from '../helpers/services';
import { startRole, type RoleProcess } from '../helpers/role-process';
import { readTenantQuota } from '../../src/redis/quota-cache';
import { CacheKeys } from '../../src/redis/cache-keys';
import { parseSseEvents } from '../../src/openai/sse';

interface Row { status: string; amount_micros: string; reserved_micros: string; completion_tokens: number; token_source: string }

/** Reads the SSE events' data from a streaming response (the project's parser) until `stopAfter` chunks or the end. */
async function readChunks(res: Response, stopAfter = Infinity): Promise<{ chunks: number; events: string[] }> {
  const events: string[] = [];
  let chunks = 0;
  for await (const { data } of parseSseEvents(res.body!)) {
    events.push(data);
    if (data.includes('"delta"')) chunks++;
    if (chunks >= stopAfter) break;
  }
  return { chunks, events };
}

function streamRequest(app: TestApp, key: string, content: string, signal?: AbortSignal): Promise<Response> {
  return fetch(`${app.url}/v1/chat/completions`, {
    method: 'POST',
    signal,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: TEST_MODEL, stream: true, messages: [{ role: 'user', content }] }),
  });
}

describe('fault recovery (M10.2)', () => {
  let db: Knex;
  let redis: Redis;
  beforeAll(async () => {
    db = testDb();
    redis = await testRedis();
  });
  afterAll(async () => {
    await db?.destroy();
    redis?.disconnect();
  });

  async function onlyRow(tenantId: string): Promise<Row> {
    await settled(db, tenantId, 60_000);
    const rows: Row[] = await db('billing_transaction').where({ tenant_id: tenantId, kind: 'usage' });
    expect(rows).toHaveLength(1);
    return rows[0]!;
  }

  async function relayedChunks(tenantId: string, requestId: string): Promise<number> {
    const entries = await redis.xrange(CacheKeys.requestStream(tenantId, requestId), '-', '+');
    return entries.filter(([, fields]) => fields[1] === 'chunk').length;
  }

  describe('client disconnect', () => {
    let app: TestApp;
    beforeAll(async () => {
      app = await startTestApp();
    }, 60_000);
    afterAll(async () => {
      await app?.stop();
    });

    it('cancels the upstream call, bills the delivered tokens and refunds the rest', async () => {
      const t = await app.tenant();
      const cancelledBefore = app.mock.stats().cancelled;
      const abort = new AbortController();
      const res = await streamRequest(app, t.key, 'a long story [mock:tokens=60] [mock:latency=40]', abort.signal);
      expect(res.status).toBe(200);
      const requestId = res.headers.get('x-request-id')!;
      const { chunks } = await readChunks(res, 5);
      abort.abort();

      const row = await onlyRow(t.tenantId);
      const delivered = await relayedChunks(t.tenantId, requestId);
      expect(row.status).toBe('committed');
      expect(row.completion_tokens).toBe(delivered); // every relayed token billed, no more
      expect(delivered).toBeGreaterThanOrEqual(chunks);
      expect(delivered).toBeLessThan(60);
      expect(row.token_source).toBe('tiktoken');
      expect(Number(row.amount_micros)).toBeLessThan(Number(row.reserved_micros));
      // The rest of the reservation was refunded: Redis holds the settled cost only.
      expect((await readTenantQuota(redis, t.tenantId))?.usedMicros).toBe(Number(row.amount_micros));
      expect(app.mock.stats().cancelled).toBe(cancelledBefore + 1);
    }, 60_000);
  });

  describe('upstream that never answers', () => {
    let app: TestApp;
    beforeAll(async () => {
      app = await startTestApp({ env: { RELAY_IDLE_TIMEOUT_SECONDS: '2' } });
    }, 60_000);
    afterAll(async () => {
      await app?.stop();
    });

    it('answers 502 after the idle timeout, cancels the upstream call and bills nothing', async () => {
      const t = await app.tenant();
      const cancelledBefore = app.mock.stats().cancelled;
      const started = Date.now();
      const res = await fetch(`${app.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${t.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: TEST_MODEL, messages: [{ role: 'user', content: 'are you there? [mock:hang]' }] }),
      });
      expect(res.status).toBe(502);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('upstream_error');
      expect(Date.now() - started).toBeGreaterThanOrEqual(2_000);
      const row = await onlyRow(t.tenantId);
      expect(row).toMatchObject({ status: 'voided', amount_micros: '0' });
      expect((await readTenantQuota(redis, t.tenantId))?.usedMicros).toBe(0);
      expect(app.mock.stats().cancelled).toBe(cancelledBefore + 1);
    }, 60_000);
  });

  describe('worker killed mid-stream', () => {
    const taskQueue = uniqueId('crash');
    let app: TestApp;
    let worker: RoleProcess | undefined;
    const startWorker = (upstreamBaseUrl: string): Promise<RoleProcess> => startRole('worker', { taskQueue, env: { UPSTREAM_BASE_URL: upstreamBaseUrl } });

    beforeAll(async () => {
      app = await startTestApp({ workers: false, taskQueue });
    }, 60_000);
    afterAll(async () => {
      await worker?.kill();
      await app?.stop();
    });

    it('settles the request exactly once after SIGKILL and restart, billing what reached the client', async () => {
      worker = await startWorker(app.mock.url);
      const t = await app.tenant();
      const res = await streamRequest(app, t.key, 'crash me [mock:tokens=200] [mock:latency=30]');
      expect(res.status).toBe(200);
      const requestId = res.headers.get('x-request-id')!;
      const reading = readChunks(res);

      // Let some output reach the client, then kill the worker without warning.
      while ((await relayedChunks(t.tenantId, requestId)) < 5) await new Promise((r) => setTimeout(r, 20));
      await worker.kill();
      const deliveredBeforeCrash = await relayedChunks(t.tenantId, requestId);

      worker = await startWorker(app.mock.url);
      const { chunks, events } = await reading;
      // The client got what was relayed, then an error (the stream was cut), then [DONE]: no retry of the upstream.
      expect(chunks).toBe(deliveredBeforeCrash);
      expect(events.some((e) => e.includes('"upstream_error"'))).toBe(true);
      expect(events.at(-1)).toBe('[DONE]');

      const row = await onlyRow(t.tenantId);
      expect(row).toMatchObject({ status: 'committed', completion_tokens: deliveredBeforeCrash, token_source: 'tiktoken' });
      // The body outlived the crash in the body store (the retry found it) and left it at settlement.
      expect(await bodyRowsAfterSettlement(db, requestId)).toBe(0);
      // The restarted worker's own /metrics saw the settlement it made.
      const metrics = await (await fetch(worker.metricsUrl)).text();
      expect(metrics).toMatch(/^billing_settlement_total\{outcome="committed",token_source="tiktoken"\} 1$/m);
      expect(await relayedChunks(t.tenantId, requestId)).toBe(deliveredBeforeCrash);
      expect((await readTenantQuota(redis, t.tenantId))?.usedMicros).toBe(Number(row.amount_micros));
    }, 120_000);

    it('a /v1/responses stream (issue 11): settled exactly once after SIGKILL and restart, billing the deltas that reached the client', async () => {
      await worker?.kill();
      worker = await startWorker(app.mock.url);
      const t = await app.tenant();
      const res = await fetch(`${app.url}/v1/responses`, {
        method: 'POST',
        headers: { authorization: `Bearer ${t.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: TEST_MODEL, stream: true, input: 'crash me [mock:tokens=200] [mock:latency=30]' }),
      });
      expect(res.status).toBe(200);
      const requestId = res.headers.get('x-request-id')!;
      const reading = res.text();
      const relayedDeltas = async (): Promise<number> => {
        const entries = await redis.xrange(CacheKeys.requestStream(t.tenantId, requestId), '-', '+');
        return entries.filter(([, f]) => f[1] === 'chunk' && (JSON.parse(f[3]!) as { type: string }).type === 'response.output_text.delta').length;
      };

      while ((await relayedDeltas()) < 5) await new Promise((r) => setTimeout(r, 20));
      await worker.kill();
      const deliveredBeforeCrash = await relayedDeltas();

      worker = await startWorker(app.mock.url);
      const text = await reading;
      // The client got the relayed events, then the Responses API's error event: no retry of the upstream.
      expect((text.match(/^event: response\.output_text\.delta$/gm) ?? []).length).toBe(deliveredBeforeCrash);
      expect(text.trimEnd().split('\n\n').at(-1)).toMatch(/^event: error\ndata: \{"type":"error","code":"upstream_error"/);

      const row = await onlyRow(t.tenantId);
      expect(row).toMatchObject({ status: 'committed', completion_tokens: deliveredBeforeCrash, token_source: 'tiktoken' });
      expect(await bodyRowsAfterSettlement(db, requestId)).toBe(0);
      expect(await relayedDeltas()).toBe(deliveredBeforeCrash);
      expect((await readTenantQuota(redis, t.tenantId))?.usedMicros).toBe(Number(row.amount_micros));
    }, 120_000);
  });
});
