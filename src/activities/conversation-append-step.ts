/**
 * ConversationAppendStep (M7): after a request with X-Conversation-Id was settled and
 * committed with a completed output, appends its exchange to the conversation: the
 * request's new user message(s) (those after its last assistant message: a client that
 * resends the whole history adds only its new turn), then the assistant reply, in that
 * order, under the conversation lock.
 *
 * - The lock (src/locks/distributed-lock.ts) is taken with the request id as `info` and a
 *   bounded wait; the write carries its fencing token, and the conversation table refuses a
 *   token lower than the last accepted one (a holder that lost the lock cannot write late).
 *   A LockTimeoutError or a StaleFenceError fails the attempt: the retry takes the lock anew,
 *   with a larger token.
 * - Idempotent per request id: a retried step finds the exchange appended and writes nothing.
 * - The user messages come from the body store (BillingStep keeps the body of such a request
 *   for this step, which deletes it afterwards); the reply text from the request's relay stream,
 *   or in relay mode 'result' (Redis was down at admission) from the output the API delivered.
 * - Prompts and replies never reach logs: only ids, counts and sequence numbers do.
 */
import { ApplicationFailure } from '@temporalio/activity';
import type { ConversationMessageInput, ConversationRepository } from '../db/conversation-repository';
import { ConversationOwnedError } from '../db/conversation-repository';
import type { RequestBodyRepository } from '../db/request-body-repository';
import type { DistributedLock } from '../locks/distributed-lock';
import type { Logger } from '../log';
import { contentText, type MessageContent } from '../openai/message-text';
import type { RelayEntry, RequestRelay } from '../redis/request-relay';
import { StreamTokenAccumulator } from '../billing/stream-token-accumulator';
import type { BilledRequestInput } from '../workflows/definitions';
import { FailureType } from '../workflows/failure-types';

export interface ConversationAppendDeps {
  conversations: Pick<ConversationRepository, 'append' | 'hasExchange'>;
  locks: Pick<DistributedLock, 'withLock'>;
  bodies: Pick<RequestBodyRepository, 'get' | 'delete'>;
  relay: Pick<RequestRelay, 'entries'>;
  log: Pick<Logger, 'info' | 'warn'>;
  /** Bounded wait for the conversation lock. @default 10000 */
  conversationLockWaitMs?: number;
}

export type ConversationAppendResult =
  | { appended: true; firstSeq: number; count: number; fence: number }
  | { appended: false; reason: 'already_appended' | 'body_missing' | 'output_missing' };

interface WireMessage {
  role?: unknown;
  content?: MessageContent;
}

/** The request's new turn: its user messages after its last assistant message. */
export function newUserMessages(body: { messages?: readonly WireMessage[] }): ConversationMessageInput[] {
  const messages = body.messages ?? [];
  let start = 0;
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i]?.role === 'assistant') {
      start = i + 1;
      break;
    }
  }
  return messages.slice(start)
    .filter((m) => m.role === 'user')
    .map((m) => ({ role: 'user', content: contentText(m.content).text }));
}

/** The reply text of choice 0 as the relay delivered it (chunks of a stream, or one completion). */
export function replyText(model: string, entries: readonly RelayEntry[]): string {
  const acc = new StreamTokenAccumulator({ model, promptTokens: 0 });
  for (const entry of entries) {
    if (entry.type === 'chunk') acc.add(entry.data as Parameters<StreamTokenAccumulator['add']>[0]);
    else if (entry.type === 'response') {
      const completion = entry.data as { choices?: Array<{ index?: number; message?: { content?: string | null } | null }> };
      const first = completion.choices?.find((c) => (c.index ?? 0) === 0);
      acc.addText(first?.message?.content ?? '');
    }
  }
  return acc.contentText(0);
}

export function createConversationAppendStep(deps: ConversationAppendDeps) {
  const waitMs = deps.conversationLockWaitMs ?? 10_000;

  /**
   * What the client was sent: the relay stream, or in relay mode 'result' the output in the body
   * store. That one is left for the body store's expiry, not deleted here: the API may still be
   * reading it, and a missing output would fail a request that was billed.
   */
  async function deliveredEntries(input: BilledRequestInput): Promise<readonly RelayEntry[] | undefined> {
    if (input.relayMode === 'redis') return deps.relay.entries(input.tenantId, input.requestId);
    const stored = await deps.bodies.get(input.requestId, 'output');
    return stored ? (JSON.parse(stored.toString('utf8')) as RelayEntry[]) : undefined;
  }

  return async function conversationAppendStep(input: BilledRequestInput): Promise<ConversationAppendResult> {
    const { requestId, tenantId, conversationId } = input;
    if (conversationId === undefined) throw ApplicationFailure.nonRetryable('request has no conversation', FailureType.conversationRefused);
    if (await deps.conversations.hasExchange(requestId)) {
      await deps.bodies.delete(requestId, 'request');
      return { appended: false, reason: 'already_appended' };
    }
    const body = await deps.bodies.get(requestId, 'request');
    if (!body) {
      deps.log.warn({ requestId, conversationId }, 'conversation append skipped: the request body is gone');
      return { appended: false, reason: 'body_missing' };
    }
    const delivered = await deliveredEntries(input);
    if (!delivered) {
      deps.log.warn({ requestId, conversationId }, 'conversation append skipped: the delivered output is gone');
      return { appended: false, reason: 'output_missing' };
    }
    const messages = newUserMessages(JSON.parse(body.toString('utf8')) as { messages?: WireMessage[] });
    messages.push({ role: 'assistant', content: replyText(input.model, delivered) });

    try {
      const result = await deps.locks.withLock(conversationId, async (lock) => {
        const appended = await deps.conversations.append({ conversationId, tenantId, requestId, fence: lock.fence, messages });
        return { ...appended, fence: lock.fence };
      }, { info: requestId, waitMs });
      await deps.bodies.delete(requestId, 'request');
      if (!result.appended) return { appended: false, reason: 'already_appended' };
      deps.log.info({ requestId, conversationId, firstSeq: result.firstSeq, count: result.count, fence: result.fence }, 'conversation appended');
      return result;
    } catch (err) {
      if (err instanceof ConversationOwnedError) throw ApplicationFailure.nonRetryable(err.message, FailureType.conversationRefused);
      throw err;
    }
  };
}
