/**
 * ConversationAppendStep (M7, issue 10) through the whole stack: requests with
 * X-Conversation-Id append their exchange (the new user message, then the reply the client
 * got) after a committed settlement, under the conversation lock. 20 concurrent requests
 * on one conversation never interleave or lose a message; another tenant naming the
 * conversation is refused and changes nothing; a malformed id is a 400; prompts and
 * replies are stored encrypted and never logged.
 */
import type { Knex } from 'knex';
import type { Redis } from '../../src/redis/client';
import { chat, replyOf, startTestApp, TEST_MODEL, type TestApp } from '../helpers/app';
import { settled } from '../helpers/ledger';
import { testDb, testRedis, uniqueId } from '../helpers/services';
import { CacheKeys } from '../../src/redis/cache-keys';
import { createConversationRepository } from '../../src/db/conversation-repository';
import { testConfig } from '../helpers/services';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('conversations (M7: ConversationAppendStep)', () => {
  const lines: string[] = [];
  let app: TestApp;
  let db: Knex;
  let redis: Redis;
  beforeAll(async () => {
    app = await startTestApp({ logLines: lines });
    db = testDb();
    redis = await testRedis();
  }, 60_000);
  afterAll(async () => {
    await app?.stop();
    await db?.destroy();
    redis?.disconnect();
  });

  // The store the app writes to, read with the same keys (the test configuration's payload codec keys).
  const conversations = () => createConversationRepository(db, testConfig().payloadCodecKeys);

  async function messagesOf(conversationId: string, tenantId: string, count: number, timeoutMs = 60_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rows = await conversations().messages(conversationId, tenantId);
      if (rows.length >= count || Date.now() > deadline) return rows;
      await sleep(100);
    }
  }

  it('20 concurrent requests on one conversation: every exchange appears exactly once, its user message and reply contiguous, fences growing', async () => {
    const t = await app.tenant();
    const conversationId = uniqueId('conv');
    const prompts = Array.from({ length: 20 }, (_, i) => `turn ${i} of ${conversationId} SECRET-PROMPT-${i}`);
    const results = await Promise.all(prompts.map((content, i) => chat(
      app, t.key,
      { model: TEST_MODEL, messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content }], ...(i % 4 === 0 ? { stream: true } : {}) },
      { 'X-Conversation-Id': conversationId },
    )));
    expect(results.map((r) => r.status)).toEqual(prompts.map(() => 200));
    await settled(db, t.tenantId);

    const messages = await messagesOf(conversationId, t.tenantId, 40);
    expect(messages).toHaveLength(40);
    expect(messages.map((m) => m.seq)).toEqual(Array.from({ length: 40 }, (_, i) => i));
    const byRequest = new Map<string, typeof messages>();
    for (const m of messages) byRequest.set(m.requestId, [...(byRequest.get(m.requestId) ?? []), m]);
    expect(byRequest.size).toBe(20);
    results.forEach((res, i) => {
      const pair = byRequest.get(res.headers.get('x-request-id')!)!;
      expect(pair.map((m) => [m.role, m.content])).toEqual([['user', prompts[i]], ['assistant', replyOf(res)]]);
      expect(pair[1]!.seq).toBe(pair[0]!.seq + 1); // contiguous: nothing of another exchange in between
      expect(pair[0]!.fence).toBe(pair[1]!.fence); // one lock holder wrote the pair
    });
    // Exchanges are written in lock order: each exchange's fence is larger than the one before it.
    const exchangeFences = messages.filter((m) => m.role === 'user').map((m) => m.fence);
    for (let i = 1; i < exchangeFences.length; i++) expect(exchangeFences[i]!).toBeGreaterThan(exchangeFences[i - 1]!);
    expect(replyOf(results[0]!).length).toBeGreaterThan(0);
    expect(await redis.exists(CacheKeys.conversationLock(conversationId))).toBe(0);
    // Settled and appended: the request bodies are gone from the body store.
    const ids = results.map((r) => r.headers.get('x-request-id')!);
    expect(await db('request_body').whereIn('request_id', ids).count<{ count: string }[]>('* as count')).toEqual([{ count: '0' }]);
    // Prompts are stored encrypted and never logged.
    const raw = await db('conversation_message').where({ conversation_id: conversationId }).select<{ ciphertext: Buffer }[]>('ciphertext');
    expect(raw.some((r) => r.ciphertext.toString('latin1').includes('SECRET-PROMPT'))).toBe(false);
    expect(lines.join('')).not.toContain('SECRET-PROMPT');
    expect(lines.map((l) => JSON.parse(l) as Record<string, unknown>)).toContainEqual(expect.objectContaining({ msg: 'conversation appended', conversationId, requestId: ids[0] }));
  }, 180_000);

  it('a client resending the history adds only its new turn', async () => {
    const t = await app.tenant();
    const conversationId = uniqueId('conv');
    const first = await chat(app, t.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'first question' }] }, { 'X-Conversation-Id': conversationId });
    expect(first.status).toBe(200);
    expect(await messagesOf(conversationId, t.tenantId, 2)).toHaveLength(2);
    const second = await chat(app, t.key, {
      model: TEST_MODEL,
      messages: [{ role: 'user', content: 'first question' }, { role: 'assistant', content: replyOf(first) }, { role: 'user', content: 'second question' }],
    }, { 'X-Conversation-Id': conversationId });
    expect(second.status).toBe(200);
    const messages = await messagesOf(conversationId, t.tenantId, 4);
    expect(messages.map((m) => [m.seq, m.role, m.content])).toEqual([
      [0, 'user', 'first question'], [1, 'assistant', replyOf(first)], [2, 'user', 'second question'], [3, 'assistant', replyOf(second)],
    ]);
  }, 60_000);

  it('another tenant naming the conversation gets 409 and changes nothing: no ledger row, no stored body, no message', async () => {
    const owner = await app.tenant();
    const other = await app.tenant();
    const conversationId = uniqueId('conv');
    const ok = await chat(app, owner.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'mine' }] }, { 'X-Conversation-Id': conversationId });
    expect(ok.status).toBe(200);
    expect(await messagesOf(conversationId, owner.tenantId, 2)).toHaveLength(2);

    const refused = await chat(app, other.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'not yours' }] }, { 'X-Conversation-Id': conversationId });
    expect(refused.status).toBe(409);
    expect(refused.json()).toEqual({ error: expect.objectContaining({ type: 'invalid_request_error', code: 'conflict', message: expect.stringContaining('X-Conversation-Id') }) });
    const requestId = refused.headers.get('x-request-id')!;
    expect(await db('billing_transaction').where({ request_id: requestId }).first()).toBeUndefined();
    expect(await db('billing_transaction').where({ tenant_id: other.tenantId }).first()).toBeUndefined();
    expect(await db('request_body').where({ request_id: requestId }).first()).toBeUndefined();
    await sleep(300);
    expect((await conversations().messages(conversationId, owner.tenantId)).map((m) => m.content)).toEqual(['mine', replyOf(ok)]);
    expect(await conversations().ownerOf(conversationId)).toBe(owner.tenantId);
  }, 60_000);

  it('a malformed X-Conversation-Id is a 400 naming the header, nothing runs', async () => {
    const t = await app.tenant();
    const res = await chat(app, t.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'hi' }] }, { 'X-Conversation-Id': 'bad id with spaces' });
    expect(res.status).toBe(400);
    expect(res.json()).toEqual({ error: expect.objectContaining({ type: 'invalid_request_error', param: 'X-Conversation-Id' }) });
    expect(await db('billing_transaction').where({ tenant_id: t.tenantId }).first()).toBeUndefined();
  });

  it('a voided request (upstream failed before output) appends nothing', async () => {
    const t = await app.tenant();
    const conversationId = uniqueId('conv');
    const failed = await chat(app, t.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'fails [mock:status=400]' }] }, { 'X-Conversation-Id': conversationId });
    expect(failed.status).toBe(502);
    await settled(db, t.tenantId);
    const requestId = failed.headers.get('x-request-id')!;
    expect(await db('billing_transaction').where({ request_id: requestId }).first()).toMatchObject({ status: 'voided' });
    await sleep(300);
    expect(await conversations().messages(conversationId, t.tenantId)).toEqual([]);
    expect(await db('request_body').where({ request_id: requestId }).first()).toBeUndefined();
  }, 60_000);
});
