/**
 * Conversations (conversation, conversation_message; M7) on the real PostgreSQL and Redis:
 * ownership by one tenant, an exchange numbered after the last message, a retried append
 * writing nothing, content encrypted at rest, the fence rule (a stale holder's late write
 * refused, by the repository and by the table's trigger), and the retention delete.
 */
import type { Knex } from 'knex';
import { Registry } from 'prom-client';
import { keyringOf } from '../../src/codec/keyring';
import { ConversationOwnedError, StaleFenceError, createConversationRepository } from '../../src/db/conversation-repository';
import { createDistributedLock } from '../../src/locks/distributed-lock';
import { createLogger } from '../../src/log';
import { createLockMetrics } from '../../src/metrics';
import type { Redis } from '../../src/redis/client';
import { createScriptRunner } from '../../src/redis/script-runner';
import { testDb, testRedis, uniqueId } from '../helpers/services';

const ring = keyringOf({ a: Buffer.alloc(32, 0x33).toString('base64') }, 'a');

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

const exchange = (text: string) => [{ role: 'user' as const, content: `question ${text}` }, { role: 'assistant' as const, content: `answer ${text}` }];

describe('conversation repository (M7)', () => {
  const conversations = () => createConversationRepository(db, ring);

  it('a conversation belongs to the tenant that claimed it first; another tenant is refused and changes nothing', async () => {
    const repo = conversations();
    const [owner, other] = [await tenant(), await tenant()];
    const id = uniqueId('conv');
    await repo.claim(id, owner);
    await repo.claim(id, owner); // the owner again: fine
    await expect(repo.claim(id, other)).rejects.toBeInstanceOf(ConversationOwnedError);
    await expect(repo.append({ conversationId: id, tenantId: other, requestId: uniqueId('req'), fence: 1, messages: exchange('x') })).rejects.toBeInstanceOf(ConversationOwnedError);
    expect(await repo.ownerOf(id)).toBe(owner);
    expect(await db('conversation_message').where({ conversation_id: id }).count<{ count: string }[]>('* as count')).toEqual([{ count: '0' }]);
    expect(await repo.messages(id, other)).toEqual([]);
  });

  it('appends exchanges in order with gap-free sequence numbers, the fence of each write, content encrypted at rest', async () => {
    const repo = conversations();
    const t = await tenant();
    const id = uniqueId('conv');
    await repo.claim(id, t);
    expect(await repo.append({ conversationId: id, tenantId: t, requestId: 'r1-' + id, fence: 3, messages: exchange('one') })).toEqual({ appended: true, firstSeq: 0, count: 2 });
    expect(await repo.append({ conversationId: id, tenantId: t, requestId: 'r2-' + id, fence: 7, messages: [...exchange('two'), { role: 'user', content: 'more' }] })).toEqual({ appended: true, firstSeq: 2, count: 3 });

    const messages = await repo.messages(id, t);
    expect(messages.map((m) => [m.seq, m.role, m.content, m.fence, m.part])).toEqual([
      [0, 'user', 'question one', 3, 0],
      [1, 'assistant', 'answer one', 3, 1],
      [2, 'user', 'question two', 7, 0],
      [3, 'assistant', 'answer two', 7, 1],
      [4, 'user', 'more', 7, 2],
    ]);
    const raw = await db('conversation_message').where({ conversation_id: id }).select<{ ciphertext: Buffer }[]>('ciphertext');
    for (const row of raw) expect(row.ciphertext.toString('utf8')).not.toMatch(/question|answer|more/);
    expect(await db('conversation').where({ conversation_id: id }).first()).toMatchObject({ last_fence: '7', message_count: 5 });
  });

  it('a retried append of the same request writes nothing twice, even with a newer fence', async () => {
    const repo = conversations();
    const t = await tenant();
    const id = uniqueId('conv');
    const requestId = uniqueId('req');
    await repo.append({ conversationId: id, tenantId: t, requestId, fence: 1, messages: exchange('a') });
    expect(await repo.append({ conversationId: id, tenantId: t, requestId, fence: 2, messages: exchange('a') })).toEqual({ appended: false, reason: 'already_appended' });
    expect((await repo.messages(id, t)).map((m) => m.content)).toEqual(['question a', 'answer a']);
    expect(await repo.hasExchange(requestId)).toBe(true);
  });

  it('a stale lock holder\'s late write is refused: the lock expired, the next holder wrote, then the first one tries', async () => {
    const registry = new Registry();
    const locks = createDistributedLock({ redis, run: createScriptRunner(redis, registry), metrics: createLockMetrics(registry), log: createLogger('silent', 'test') }, { ttlMs: 150 });
    const repo = conversations();
    const t = await tenant();
    const id = uniqueId('conv');
    await repo.claim(id, t);

    const stale = await locks.acquire(id, { info: 'req-stale' });
    // The holder pauses past its TTL (its watchdog cannot run: simulated by letting the lock go the way an expiry does).
    await locks.forceRelease(id);
    const next = await locks.acquire(id, { info: 'req-next', waitMs: 1_000 });
    expect(next.fence).toBeGreaterThan(stale.fence);
    await repo.append({ conversationId: id, tenantId: t, requestId: uniqueId('req-next'), fence: next.fence, messages: exchange('next') });
    await next.release();

    const late = repo.append({ conversationId: id, tenantId: t, requestId: uniqueId('req-stale'), fence: stale.fence, messages: exchange('stale') });
    await expect(late).rejects.toBeInstanceOf(StaleFenceError);
    await expect(late).rejects.toThrow(`stale fencing token ${stale.fence} for conversation ${id} (last accepted ${next.fence})`);
    await stale.release();
    expect((await repo.messages(id, t)).map((m) => m.content)).toEqual(['question next', 'answer next']);
  });

  it('the table itself refuses a message whose fence is lower than the conversation\'s last accepted one', async () => {
    const repo = conversations();
    const t = await tenant();
    const id = uniqueId('conv');
    await repo.append({ conversationId: id, tenantId: t, requestId: uniqueId('req'), fence: 10, messages: exchange('ok') });
    const row = { conversation_id: id, seq: 2, request_id: uniqueId('req'), part: 0, role: 'user', key_id: 'a', ciphertext: Buffer.from('x') };
    await expect(db('conversation_message').insert({ ...row, fence: 9 })).rejects.toThrow(/stale fencing token 9/);
    await db('conversation_message').insert({ ...row, fence: 10 }); // an equal fence is the holder itself
    expect(await db('conversation_message').where({ conversation_id: id }).count<{ count: string }[]>('* as count')).toEqual([{ count: '3' }]);
  });

  it('retention: deleteOlderThan removes messages older than the given days, and only those', async () => {
    const repo = conversations();
    const t = await tenant();
    const id = uniqueId('conv');
    await repo.append({ conversationId: id, tenantId: t, requestId: uniqueId('old'), fence: 1, messages: exchange('old') });
    await db('conversation_message').where({ conversation_id: id }).update({ created_at: db.raw(`now() - interval '31 days'`) });
    await repo.append({ conversationId: id, tenantId: t, requestId: uniqueId('new'), fence: 2, messages: exchange('new') });
    expect(await repo.deleteOlderThan(30)).toBeGreaterThanOrEqual(2);
    expect((await repo.messages(id, t)).map((m) => [m.seq, m.content])).toEqual([[2, 'question new'], [3, 'answer new']]);
  });
});
