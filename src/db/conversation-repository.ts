/**
 * Conversations and their messages (tables conversation, conversation_message; M7).
 *
 * - Ownership: a conversation id is global and belongs to the tenant that named it first
 *   (`claim`, at the API, before anything runs); another tenant naming it is refused with
 *   ConversationOwnedError and nothing is written.
 * - Append: one exchange (the request's new user message(s), then the assistant reply) in
 *   one transaction, numbered after the conversation's last message. The caller holds the
 *   conversation lock and passes its fencing token: a token lower than the conversation's
 *   last accepted one is refused (StaleFenceError; the table's trigger refuses it too), so a
 *   holder that lost its lock cannot write after the next holder. An exchange already
 *   appended (same request id: a retried step) is left as it is.
 * - Content is encrypted with the payload codec's keys (src/codec/body-cipher.ts), bound to
 *   its conversation, request and part; prompts never reach logs (only ids and counts do).
 * - Retention: `deleteOlderThan` removes messages past CONVERSATION_RETENTION_DAYS (the
 *   reservation sweeper's run calls it).
 */
import type { Knex } from 'knex';
import { openBody, sealBody } from '../codec/body-cipher';
import type { CodecKeyring } from '../codec/keyring';

export type ConversationRole = 'system' | 'developer' | 'user' | 'assistant' | 'tool';

export interface ConversationMessageInput {
  role: ConversationRole;
  content: string;
}

export interface ConversationMessage extends ConversationMessageInput {
  seq: number;
  requestId: string;
  part: number;
  fence: number;
  createdAt: Date;
}

/** The conversation id is taken by another tenant. */
export class ConversationOwnedError extends Error {
  override name = 'ConversationOwnedError';

  constructor(readonly conversationId: string) {
    super(`conversation ${conversationId} belongs to another tenant`);
  }
}

/** A write carried a fencing token lower than one the conversation already accepted: its lock was lost. */
export class StaleFenceError extends Error {
  override name = 'StaleFenceError';

  constructor(
    readonly conversationId: string,
    readonly fence: number,
    readonly acceptedFence: number,
  ) {
    super(`stale fencing token ${fence} for conversation ${conversationId} (last accepted ${acceptedFence}): the lock was lost before this write`);
  }
}

export interface AppendExchange {
  conversationId: string;
  tenantId: string;
  requestId: string;
  /** The fencing token of the lock held for this write. */
  fence: number;
  messages: readonly ConversationMessageInput[];
}

export type AppendResult = { appended: true; firstSeq: number; count: number } | { appended: false; reason: 'already_appended' };

interface ConversationRow {
  tenant_id: string;
  last_fence: string;
  message_count: number;
}

interface MessageRow {
  seq: number;
  request_id: string;
  part: number;
  role: ConversationRole;
  fence: string;
  key_id: string;
  ciphertext: Buffer;
  created_at: Date;
}

const aad = (conversationId: string, requestId: string, part: number): string => `conversation\n${conversationId}\n${requestId}\n${part}`;

export function createConversationRepository(db: Knex, keyring: CodecKeyring) {
  /** Creates the conversation for `tenantId` unless it exists; refuses one of another tenant. */
  async function claim(conversationId: string, tenantId: string, trx: Knex = db): Promise<void> {
    await trx('conversation').insert({ conversation_id: conversationId, tenant_id: tenantId }).onConflict('conversation_id').ignore();
    const row = await trx('conversation').where({ conversation_id: conversationId }).first<{ tenant_id: string } | undefined>('tenant_id');
    if (row?.tenant_id !== tenantId) throw new ConversationOwnedError(conversationId);
  }

  return {
    claim,

    async append(exchange: AppendExchange): Promise<AppendResult> {
      const { conversationId, tenantId, requestId, fence } = exchange;
      return db.transaction(async (trx) => {
        await claim(conversationId, tenantId, trx);
        // The row lock serialises appends to one conversation in the database as well.
        const row = await trx('conversation').where({ conversation_id: conversationId }).forUpdate().first<ConversationRow>('tenant_id', 'last_fence', 'message_count');
        const accepted = Number(row.last_fence);
        if (fence < accepted) throw new StaleFenceError(conversationId, fence, accepted);
        const done = await trx('conversation_message').where({ request_id: requestId }).first<{ seq: number } | undefined>('seq');
        if (done !== undefined) return { appended: false, reason: 'already_appended' } as const;
        const firstSeq = row.message_count;
        await trx('conversation')
          .where({ conversation_id: conversationId })
          .update({ last_fence: fence, message_count: firstSeq + exchange.messages.length, updated_at: trx.fn.now() });
        if (exchange.messages.length > 0) {
          await trx('conversation_message').insert(exchange.messages.map((m, part) => {
            const sealed = sealBody(keyring, Buffer.from(m.content, 'utf8'), aad(conversationId, requestId, part));
            return { conversation_id: conversationId, seq: firstSeq + part, request_id: requestId, part, role: m.role, fence, key_id: sealed.keyId, ciphertext: sealed.data };
          }));
        }
        return { appended: true, firstSeq, count: exchange.messages.length } as const;
      });
    },

    /** Whether a request's exchange is in its conversation already. */
    async hasExchange(requestId: string): Promise<boolean> {
      return (await db('conversation_message').where({ request_id: requestId }).first<{ seq: number } | undefined>('seq')) !== undefined;
    },

    /** The owner of a conversation, or undefined when nobody claimed it. */
    async ownerOf(conversationId: string): Promise<string | undefined> {
      const row = await db('conversation').where({ conversation_id: conversationId }).first<{ tenant_id: string } | undefined>('tenant_id');
      return row?.tenant_id;
    },

    /** The messages of a conversation in order, decrypted (tenant-scoped: another tenant reads nothing). */
    async messages(conversationId: string, tenantId: string): Promise<ConversationMessage[]> {
      const rows = await db('conversation_message as m')
        .join('conversation as c', 'c.conversation_id', 'm.conversation_id')
        .where({ 'm.conversation_id': conversationId, 'c.tenant_id': tenantId })
        .orderBy('m.seq')
        .select<MessageRow[]>('m.seq', 'm.request_id', 'm.part', 'm.role', 'm.fence', 'm.key_id', 'm.ciphertext', 'm.created_at');
      return rows.map((r) => ({
        seq: r.seq,
        requestId: r.request_id,
        part: r.part,
        role: r.role,
        fence: Number(r.fence),
        createdAt: r.created_at,
        content: openBody(keyring, { keyId: r.key_id, data: r.ciphertext }, aad(conversationId, r.request_id, r.part)).toString('utf8'),
      }));
    },

    /** Deletes messages older than `days` (retention); returns how many. Conversations themselves stay (they hold the ownership and the fence). */
    async deleteOlderThan(days: number): Promise<number> {
      return db('conversation_message').where('created_at', '<', db.raw(`now() - make_interval(days => ?)`, [days])).del();
    },
  };
}

export type ConversationRepository = ReturnType<typeof createConversationRepository>;
