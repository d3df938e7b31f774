/**
 * ConversationAppendStep (M7) on the real PostgreSQL and Redis: the new user turn and the
 * relayed reply appended in order under the lock, the body deleted after; a retried step
 * writes nothing; a body gone before the append writes nothing; another tenant's
 * conversation fails for good; a lock held past the bounded wait fails the attempt
 * (retryable) and keeps the body for the retry. Prompts never reach the log.
 */
import type { Knex } from 'knex';
import { Registry } from 'prom-client';
import { ApplicationFailure } from '@temporalio/common';
import { createConversationAppendStep } from '../../src/activities/conversation-append-step';
import { keyringOf } from '../../src/codec/keyring';
import { createConversationRepository } from '../../src/db/conversation-repository';
import { createRequestBodyRepository } from '../../src/db/request-body-repository';
import { createDistributedLock, LockTimeoutError } from '../../src/locks/distributed-lock';
import { createLogger } from '../../src/log';
import { createLockMetrics } from '../../src/metrics';
import type { Redis } from '../../src/redis/client';
import { createRequestRelay } from '../../src/redis/request-relay';
import { createScriptRunner } from '../../src/redis/script-runner';
import type { BilledRequestInput } from '../../src/workflows/definitions';
import { FailureType } from '../../src/workflows/failure-types';
import { testDb, testRedis, uniqueId } from '../helpers/services';

const ring = keyringOf({ a: Buffer.alloc(32, 0x44).toString('base64') }, 'a');

let db: Knex;
let redis: Redis;
beforeAll(async () => {
  db = testDb();
  redis = await testRedis();
});
afterAll(async () => {
  await db.destroy();
  redis.disconnect();
});

async function tenant(): Promise<string> {
  const id = uniqueId('tenant');
  await db('tenant_quota').insert({ tenant_id: id, name: id, quota_limit_micros: 1_000 });
  return id;
}

function harness() {
  const registry = new Registry();
  const logLines: string[] = [];
  const log = createLogger('info', 'test', { write: (line: string) => void logLines.push(line) });
  const locks = createDistributedLock({ redis, run: createScriptRunner(redis, registry), metrics: createLockMetrics(registry), log });
  const conversations = createConversationRepository(db, ring);
  const bodies = createRequestBodyRepository(db, ring);
  const relay = createRequestRelay(redis, { ttlSeconds: 600 });
  const step = createConversationAppendStep({ conversations, locks, bodies, relay, log, conversationLockWaitMs: 300 });
  return { step, locks, conversations, bodies, relay, logLines };
}

async function request(h: ReturnType<typeof harness>, tenantId: string, conversationId: string, messages: unknown[], reply: string[]): Promise<BilledRequestInput> {
  const requestId = uniqueId('req');
  await h.bodies.put({ requestId, tenantId, kind: 'request', body: Buffer.from(JSON.stringify({ model: 'gpt-4o-mini', messages }), 'utf8') });
  const writer = h.relay.writer(tenantId, requestId);
  reply.forEach((content, i) => writer.push({ type: 'chunk', data: { id: 'c', choices: [{ index: 0, delta: i === 0 ? { role: 'assistant', content } : { content } }] } }));
  writer.push({ type: 'done' });
  await writer.flush();
  return {
    requestId, tenantId, apiKeyId: 'key', model: 'gpt-4o-mini',
    price: { model: 'gpt-4o-mini', inputPriceMicrosPerMtok: 1, outputPriceMicrosPerMtok: 1, maxOutputTokens: 64 },
    promptTokens: 5, maxOutputTokens: 64, reservedMicros: 1, stream: true, includeUsage: false, relayMode: 'redis',
    conversationId, bodyRef: { requestId },
  };
}

describe('ConversationAppendStep (M7)', () => {
  it('appends the new user turn then the relayed reply, under the lock, and deletes the body; never logs the prompt', async () => {
    const h = harness();
    const t = await tenant();
    const conversationId = uniqueId('conv');
    const input = await request(h, t, conversationId, [
      { role: 'system', content: 'sys' },
      { role: 'user', content: 'old PROMPT-A' },
      { role: 'assistant', content: 'old reply' },
      { role: 'user', content: [{ type: 'text', text: 'new PROMPT-B' }] },
      { role: 'user', content: 'and PROMPT-C' },
    ], ['Hel', 'lo']);
    const result = await h.step(input);
    expect(result).toMatchObject({ appended: true, firstSeq: 0, count: 3 });
    expect((await h.conversations.messages(conversationId, t)).map((m) => [m.seq, m.role, m.content])).toEqual([
      [0, 'user', 'new PROMPT-B'], [1, 'user', 'and PROMPT-C'], [2, 'assistant', 'Hello'],
    ]);
    expect(await h.bodies.get(input.requestId, 'request')).toBeUndefined();
    expect(await h.locks.inspect(conversationId)).toBeNull();
    expect(h.logLines.join('')).toContain('conversation appended');
    expect(h.logLines.join('')).not.toMatch(/PROMPT|Hello/);
  });

  it('a retried step finds the exchange appended and writes nothing', async () => {
    const h = harness();
    const t = await tenant();
    const conversationId = uniqueId('conv');
    const input = await request(h, t, conversationId, [{ role: 'user', content: 'q' }], ['a']);
    await h.step(input);
    // The body is back (a retry after a crash between the append and the delete): it is not read again.
    await h.bodies.put({ requestId: input.requestId, tenantId: t, kind: 'request', body: Buffer.from('{"messages":[{"role":"user","content":"other"}]}') });
    expect(await h.step(input)).toEqual({ appended: false, reason: 'already_appended' });
    expect((await h.conversations.messages(conversationId, t)).map((m) => m.content)).toEqual(['q', 'a']);
    expect(await h.bodies.get(input.requestId, 'request')).toBeUndefined();
  });

  it('a body gone before the append writes nothing and does not fail', async () => {
    const h = harness();
    const t = await tenant();
    const conversationId = uniqueId('conv');
    const input = await request(h, t, conversationId, [{ role: 'user', content: 'q' }], ['a']);
    await h.bodies.delete(input.requestId, 'request');
    expect(await h.step(input)).toEqual({ appended: false, reason: 'body_missing' });
    expect(await h.conversations.messages(conversationId, t)).toEqual([]);
  });

  it('relay mode result (Redis was down at admission): the reply comes from the delivered output in the body store, which is left to expire', async () => {
    const h = harness();
    const t = await tenant();
    const conversationId = uniqueId('conv');
    const input = { ...(await request(h, t, conversationId, [{ role: 'user', content: 'asked while Redis was down' }], [])), relayMode: 'result' as const, stream: false };
    const completion = { id: 'c', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: 'the delivered reply' }, finish_reason: 'stop' }] };
    await h.bodies.put({ requestId: input.requestId, tenantId: t, kind: 'output', body: Buffer.from(JSON.stringify([{ type: 'response', data: completion }, { type: 'done' }]), 'utf8') });
    expect(await h.step(input)).toMatchObject({ appended: true, firstSeq: 0, count: 2 });
    expect((await h.conversations.messages(conversationId, t)).map((m) => [m.role, m.content])).toEqual([['user', 'asked while Redis was down'], ['assistant', 'the delivered reply']]);
    expect(await h.bodies.get(input.requestId, 'request')).toBeUndefined();
    // The API may still be reading it: not deleted here.
    expect(await h.bodies.get(input.requestId, 'output')).toBeDefined();
  });

  it('relay mode result with the output gone writes nothing and does not fail', async () => {
    const h = harness();
    const t = await tenant();
    const conversationId = uniqueId('conv');
    const input = { ...(await request(h, t, conversationId, [{ role: 'user', content: 'q' }], [])), relayMode: 'result' as const };
    expect(await h.step(input)).toEqual({ appended: false, reason: 'output_missing' });
    expect(await h.conversations.messages(conversationId, t)).toEqual([]);
  });

  it('another tenant\'s conversation fails for good (ConversationRefused) and writes nothing', async () => {
    const h = harness();
    const [owner, other] = [await tenant(), await tenant()];
    const conversationId = uniqueId('conv');
    await h.conversations.claim(conversationId, owner);
    const input = await request(h, other, conversationId, [{ role: 'user', content: 'q' }], ['a']);
    const err = await h.step(input).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect(err).toMatchObject({ type: FailureType.conversationRefused, nonRetryable: true });
    expect(await h.conversations.messages(conversationId, owner)).toEqual([]);
    expect(await h.conversations.messages(conversationId, other)).toEqual([]);
  });

  it('a lock held past the bounded wait fails the attempt (retryable) and keeps the body; the retry appends with a larger fence', async () => {
    const h = harness();
    const t = await tenant();
    const conversationId = uniqueId('conv');
    const input = await request(h, t, conversationId, [{ role: 'user', content: 'q' }], ['a']);
    const other = await h.locks.acquire(conversationId, { info: 'someone-else' });
    await expect(h.step(input)).rejects.toBeInstanceOf(LockTimeoutError);
    expect(await h.conversations.messages(conversationId, t)).toEqual([]);
    expect(await h.bodies.get(input.requestId, 'request')).toBeDefined();
    await other.release();
    const retried = await h.step(input);
    expect(retried).toMatchObject({ appended: true, firstSeq: 0, count: 2 });
    expect(retried.appended && retried.fence).toBeGreaterThan(other.fence);
  });
});
