/**
 * Redis stopped mid-traffic (M2.3, M4.4, M12): admission continues through the
 * PostgreSQL fallback, settlements wait for Redis instead of losing adjustments,
 * and once Redis is back every counter converges to the ledger exactly.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Knex } from 'knex';
import { chat, replyOf, startTestApp, TEST_MODEL, type TestApp } from '../helpers/app';
import { createConversationRepository } from '../../src/db/conversation-repository';
import { CacheKeys } from '../../src/redis/cache-keys';
import { ledgerUsage, settled } from '../helpers/ledger';
import { Client, Connection } from '@temporalio/client';
import { AesGcmPayloadCodec } from '../../src/codec/payload-codec';
import { billedRequestWorkflowId } from '../../src/workflows/definitions';
import { decodedHistoryText } from '../helpers/history-text';
import { temporalAddress, testConfig, testDb } from '../helpers/services';

const PROMPT_MARKER = 'prompt-marker-outage';
import { freePort } from '../../src/embedded/child';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../src/embedded/redis';
import { readKeyBudget, readTenantQuota } from '../../src/redis/quota-cache';
import { createRedis } from '../../src/redis/client';

async function eventually(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not converged after ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('Redis outage (M2.3, M12)', () => {
  let dir: string;
  let port: number;
  let redisServer: EmbeddedRedis;
  let app: TestApp;
  let db: Knex;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'billing-outage-'));
    port = await freePort();
    redisServer = await startEmbeddedRedis({ port, dir }); // AOF on: a restart keeps the counters
    app = await startTestApp({ redisUrl: redisServer.url });
    db = testDb();
  }, 60_000);
  afterAll(async () => {
    await app?.stop();
    await redisServer?.stop();
    await db?.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('admits through PostgreSQL while Redis is down and converges exactly after it returns', async () => {
    const t = await app.tenant({ quotaMicros: 1_000_000, budgetMicros: 500_000 });
    const ask = (i: number, stream = false) => chat(app, t.key, { model: TEST_MODEL, stream, messages: [{ role: 'user', content: `request ${i} ${PROMPT_MARKER}` }] });

    const before = await Promise.all(Array.from({ length: 10 }, (_, i) => ask(i)));
    expect(before.map((r) => r.status)).toEqual(Array(10).fill(200));
    await settled(db, t.tenantId);

    await redisServer.stop();
    const during = [];
    for (let i = 0; i < 12; i++) during.push(await ask(100 + i, i % 3 === 0));
    expect(during.map((r) => r.status)).toEqual(Array(12).fill(200));
    expect(during.filter((_, i) => i % 3 === 0).every((r) => r.text.trimEnd().endsWith('data: [DONE]'))).toBe(true);
    // Relay mode result: neither the prompt nor the completion is in history, even decoded with the codec.
    const temporal = await Connection.connect({ address: temporalAddress() });
    try {
      const plain = new Client({ connection: temporal });
      for (const res of [during[1]!, during[2]!]) {
        const requestId = res.headers.get('x-request-id')!;
        const completion = (res.json() as { choices: Array<{ message: { content: string } }> }).choices[0]!.message.content;
        const history = await plain.workflow.getHandle(billedRequestWorkflowId(requestId)).fetchHistory();
        const decoded = await decodedHistoryText(history, new AesGcmPayloadCodec(testConfig().payloadCodecKeys));
        expect(decoded).toContain('"relayMode":"result"');
        expect(decoded).toContain('outputRef');
        expect(decoded).not.toContain(PROMPT_MARKER);
        expect(decoded).not.toContain(completion);
      }
    } finally {
      await temporal.close();
    }
    // Embeddings and the Responses API (issue 11) take the same path: admitted by the fallback, output through the workflow.
    const post = async (path: string, body: unknown): Promise<{ status: number; text: string }> => {
      const res = await fetch(`${app.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${t.key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: res.status, text: await res.text() };
    };
    const operations = [
      await post('/v1/embeddings', { model: TEST_MODEL, input: ['outage', PROMPT_MARKER] }),
      await post('/v1/responses', { model: TEST_MODEL, input: `json ${PROMPT_MARKER}` }),
      await post('/v1/responses', { model: TEST_MODEL, stream: true, input: `stream ${PROMPT_MARKER} [mock:tokens=6]` }),
    ];
    expect(operations.map((r) => r.status)).toEqual([200, 200, 200]);
    expect((JSON.parse(operations[0]!.text) as { data: unknown[] }).data).toHaveLength(2);
    expect((JSON.parse(operations[1]!.text) as { object: string }).object).toBe('response');
    expect((operations[2]!.text.match(/^event: response\.output_text\.delta$/gm) ?? []).length).toBe(6);
    expect(operations[2]!.text.trimEnd().split('\n\n').at(-1)).toMatch(/^event: response\.completed\n/);
    const fallbackRows = await db('billing_transaction').where({ tenant_id: t.tenantId, admission_path: 'postgres' });
    expect(fallbackRows).toHaveLength(15);

    redisServer = await startEmbeddedRedis({ port, dir });
    const after = await Promise.all(Array.from({ length: 5 }, (_, i) => ask(200 + i)));
    expect(after.map((r) => r.status)).toEqual(Array(5).fill(200));

    await settled(db, t.tenantId, 60_000);
    // Relay mode result: the outputs went through the body store and were deleted once delivered, the bodies at settlement.
    await eventually(async () => (await db('request_body').where({ tenant_id: t.tenantId })).length === 0, 60_000, 'no body left');
    const committed: Array<{ amount_micros: string }> = await db('billing_transaction').where({ tenant_id: t.tenantId, kind: 'usage', status: 'committed' });
    expect(committed).toHaveLength(30);
    const total = committed.reduce((sum, r) => sum + Number(r.amount_micros), 0);
    expect(await ledgerUsage(db, t.tenantId)).toBe(total);

    const probe = createRedis(redisServer.url, { lazyConnect: true });
    try {
      await probe.connect();
      // Settlements held back by the outage apply their adjustments once Redis answers again.
      await eventually(async () => (await readTenantQuota(probe, t.tenantId))?.usedMicros === total, 60_000, 'tenant used == ledger');
      await eventually(async () => (await readKeyBudget(probe, t.tenantId, t.apiKeyId))?.spentMicros === total, 60_000, 'key spent == ledger');
      expect(await readTenantQuota(probe, t.tenantId)).toEqual({ limitMicros: 1_000_000, usedMicros: total });
      expect(await readKeyBudget(probe, t.tenantId, t.apiKeyId)).toEqual({ budgetMicros: 500_000, spentMicros: total });
    } finally {
      probe.disconnect();
    }
  }, 180_000);

  it('appends a conversation exchange admitted while Redis was down once Redis is back (M7, issue 14)', async () => {
    const t = await app.tenant();
    const conversationId = `conv-outage-${Date.now().toString(36)}`;
    const ask = (content: string, stream: boolean) => chat(app, t.key, { model: TEST_MODEL, stream, messages: [{ role: 'user', content }] }, { 'x-conversation-id': conversationId });

    await redisServer.stop();
    // Relay mode result: the reply comes from the delivered output, the lock waits for Redis.
    const during = [await ask('during the outage, JSON [mock:tokens=4]', false), await ask('during the outage, streamed [mock:tokens=5]', true)];
    expect(during.map((r) => r.status)).toEqual([200, 200]);
    redisServer = await startEmbeddedRedis({ port, dir });

    const conversations = createConversationRepository(db, testConfig().payloadCodecKeys);
    await eventually(async () => (await conversations.messages(conversationId, t.tenantId)).length >= 4, 90_000, 'both exchanges appended');
    const messages = await conversations.messages(conversationId, t.tenantId);
    expect(messages.map((m) => m.seq)).toEqual([0, 1, 2, 3]);
    // Both waited out the outage for the lock: appended in the order they got it, each exchange contiguous.
    const exchanges = [0, 2].map((i) => [messages[i]!, messages[i + 1]!].map((m) => [m.role, m.content]));
    const expected = [
      [['user', 'during the outage, JSON [mock:tokens=4]'], ['assistant', replyOf(during[0]!)]],
      [['user', 'during the outage, streamed [mock:tokens=5]'], ['assistant', replyOf(during[1]!)]],
    ];
    expect(exchanges.sort((a, b) => String(a[0]![1]).localeCompare(String(b[0]![1])))).toEqual(expected);
    await settled(db, t.tenantId, 60_000);
    const rows: Array<{ status: string }> = await db('billing_transaction').where({ tenant_id: t.tenantId, kind: 'usage' });
    expect(rows.map((r) => r.status)).toEqual(['committed', 'committed']);
  }, 180_000);

  it('a retry of a request admitted while Redis was down is answered as the duplicate it is, never a 429 for a billed request (issue 14)', async () => {
    const t = await app.tenant();
    const idempotencyKey = `outage-retry-${Date.now().toString(36)}`;
    const body = { model: TEST_MODEL, messages: [{ role: 'user', content: 'admitted through PostgreSQL [mock:tokens=6]' }] };
    await redisServer.stop();
    // Admitted through the PostgreSQL fallback: Redis never gets this request's record.
    const first = await chat(app, t.key, body, { 'idempotency-key': idempotencyKey });
    expect(first.status).toBe(200);
    redisServer = await startEmbeddedRedis({ port, dir });
    // The key is now rate limited (1 per minute, the unit taken by another request) when the client retries.
    expect((await app.admin('PATCH', `/admin/api-keys/${t.apiKeyId}`, { rpm_limit: 1 })).status).toBe(200);
    await eventually(async () => (await chat(app, t.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'takes the unit' }] })).status === 429, 30_000, 'the key rate limited');
    // Redis knows nothing of the request: its settlement's adjustment, which writes the record, has not
    // reached Redis yet, or Redis lost it with its last second of writes. The ledger does know it.
    await settled(db, t.tenantId, 60_000);
    const probe = createRedis(redisServer.url, { lazyConnect: true });
    try {
      await probe.connect();
      await probe.del(CacheKeys.request(t.tenantId, first.headers.get('x-request-id')!));
    } finally {
      probe.disconnect();
    }
    // Past the edge (the ledger knows the id) to its run: relay mode result delivers an output once,
    // so the duplicate is told it has expired, as a replay past the relay's TTL is; nothing runs again.
    const retry = await chat(app, t.key, body, { 'idempotency-key': idempotencyKey });
    expect([retry.status, retry.headers.get('x-request-id')]).toEqual([409, first.headers.get('x-request-id')]);
    expect(retry.text).toContain('completed request whose output has expired');
    await settled(db, t.tenantId, 60_000);
    const rows: Array<{ request_id: string }> = await db('billing_transaction').where({ tenant_id: t.tenantId, kind: 'usage', status: 'committed' });
    expect(rows.filter((r) => r.request_id === first.headers.get('x-request-id'))).toHaveLength(1);
  }, 120_000);
});
