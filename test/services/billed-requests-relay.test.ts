/**
 * A billed request's answer when the check "has its run closed?" answers late (issue 13 item 4,
 * M12): on the real dev server, Redis and PostgreSQL, with the app's worker running the workflow.
 * A JSON request writes its relay only at the end of the upstream call, so its reader asks Temporal
 * (describe) whether the run is still going after each silent block. While a Temporal server
 * process dies and its shards move, that describe() is retried for seconds and answers after the
 * run has relayed its output and closed: the client must get that output, never a 409 "output has
 * expired" (test/cluster/temporal-server-kill.test.ts saw it in about 2 runs of 17).
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Redis } from '../../src/redis/client';
import { createRepositories } from '../../src/db/repositories';
import { createLogger } from '../../src/log';
import type { ChatCompletionRequest } from '../../src/openai/chat-request';
import { createRequestRelay, type RelayEntry, type RequestRelay } from '../../src/redis/request-relay';
import { createBilledRequests } from '../../src/services/billed-requests';
import { createBilledRequestClient } from '../../src/workflows/client';
import { billedRequestWorkflowId } from '../../src/workflows/definitions';
import { startTestApp, TEST_MODEL, type TestApp } from '../helpers/app';
import { settled } from '../helpers/ledger';
import { devServerEnv } from '../helpers/temporal';
import { testConfig, testDb, testRedis, uniqueId } from '../helpers/services';

describe('billed request relay with a late describe (issue 13 item 4)', () => {
  const taskQueue = uniqueId('late-describe');
  let app: TestApp;
  let env: TestWorkflowEnvironment;
  let db: Knex;
  let redis: Redis;
  let relay: RequestRelay;
  beforeAll(async () => {
    // The app's worker runs the workflows; the requests below go through a BilledRequests of the test's own.
    app = await startTestApp({ taskQueue });
    env = await devServerEnv();
    db = testDb();
    redis = await testRedis();
    relay = createRequestRelay(redis, { ttlSeconds: 3600 });
  }, 60_000);
  afterAll(async () => {
    await app?.stop();
    await env?.teardown();
    await relay?.close();
    await db?.destroy();
    redis?.disconnect();
  });

  it('relays the output of a JSON request whose run closed while the describe of its reader was on its way', async () => {
    const workflows = createBilledRequestClient(env.client, taskQueue);
    const lateChecks: string[] = [];
    const requests = createBilledRequests({
      prices: createRepositories(db, { bodyKeys: testConfig().payloadCodecKeys }).modelPrices,
      // The real describe, answered only once the run has closed (as when the SDK retries it on the
      // surviving frontend until the dead process's shard has moved and the run has finished meanwhile).
      workflows: {
        admit: (input) => workflows.admit(input),
        awaitOutput: (requestId) => workflows.awaitOutput(requestId),
        async isFinished(requestId) {
          lateChecks.push(requestId);
          await env.client.workflow.getHandle(billedRequestWorkflowId(requestId)).result();
          return workflows.isFinished(requestId);
        },
      },
      bodies: createRepositories(db, { bodyKeys: testConfig().payloadCodecKeys }).requestBodies,
      relay,
      redis,
      log: createLogger('silent', 'late-describe-test'),
    });

    const t = await app.tenant();
    const origin = { tenantId: t.tenantId, apiKeyId: t.apiKeyId };
    // 20 tokens 100 ms apart: the relay stays empty for 2 s, past the reader's first 1-s block.
    const body: ChatCompletionRequest = { model: TEST_MODEL, messages: [{ role: 'user', content: 'late describe [mock:tokens=20] [mock:latency=100]' }] };
    const raw = Buffer.from(JSON.stringify(body), 'utf8');
    const requestId = requests.requestId(origin);
    const input = await requests.prepare(origin, requestId, body, createHash('sha256').update(raw).digest('hex'));
    expect(input.relayMode).toBe('redis');

    const output = await requests.admit(input, { take: () => raw }, new AbortController().signal);
    const entries: RelayEntry[] = [];
    for await (const entry of output) entries.push(entry);

    // The path under test ran: the reader asked while the relay did not exist, and heard "closed".
    expect(lateChecks[0]).toBe(requestId);
    expect(await workflows.isFinished(requestId)).toBe(true);
    expect(entries.map((e) => e.type)).toEqual(['response', 'done']);
    const usage = (entries[0] as { data: { usage: { prompt_tokens: number; completion_tokens: number } } }).data.usage;
    expect(usage.completion_tokens).toBe(20);

    // Billed once, for exactly what the client got.
    await settled(db, t.tenantId);
    const rows: Array<{ request_id: string; status: string; prompt_tokens: number; completion_tokens: number; amount_micros: string }> =
      await db('billing_transaction').where({ tenant_id: t.tenantId, kind: 'usage' });
    expect(rows.map((r) => ({ id: r.request_id, status: r.status, prompt: r.prompt_tokens, completion: r.completion_tokens })))
      .toEqual([{ id: requestId, status: 'committed', prompt: usage.prompt_tokens, completion: 20 }]);
    expect(Number(rows[0]!.amount_micros)).toBe(usage.prompt_tokens + 2 * 20);
  }, 60_000);
});
