/**
 * UpstreamCallStep's calls for the operations beside chat (issue 11): embeddings (one JSON
 * answer) and the Responses API (a JSON answer, or its event stream). The step keeps
 * everything the operations share (channels and fail-over, heartbeats, the client's cancel,
 * "no retry once output reached the client", settlement of what was delivered); this module
 * only builds the upstream request, relays what the upstream sent, exactly as it came, and
 * feeds the accumulator (src/billing/operation-usage.ts).
 */
import { ApplicationFailure } from '@temporalio/activity';
import { addEmbeddingsResponse, addResponsesEvent, addResponsesResponse } from '../billing/operation-usage';
import type { StreamTokenAccumulator } from '../billing/stream-token-accumulator';
import { splicedUpstreamRequest } from '../openai/serialized-request';
import type { RelayEntry } from '../redis/request-relay';
import type { UpstreamProvider, UpstreamRequestBody } from '../upstream/provider';
import { BilledOperation } from '../workflows/definitions';
import { FailureType } from '../workflows/failure-types';

/** The operations this module calls. */
export type NonChatOperation = Exclude<BilledOperation, 'chat'>;

/** Members the gateway sets itself, per operation: the provider adds `stream`, the output cap is the reservation's. */
const GATEWAY_MEMBERS: Record<NonChatOperation, ReadonlySet<string>> = {
  embeddings: new Set(['stream']),
  responses: new Set(['stream', 'stream_options', 'max_output_tokens']),
};

/**
 * The upstream body of a stored request: spliced from its bytes (no parse, no copy), or,
 * when a member repeats, the parsed body serialised with the same changes. A Responses
 * request gets the reservation's output cap as `max_output_tokens` (so the upstream cannot
 * produce more than was reserved); an embeddings request goes as the client sent it.
 */
export function operationRequestBody(operation: NonChatOperation, stored: Buffer, maxOutputTokens: number): UpstreamRequestBody {
  const added: Record<string, unknown> = operation === BilledOperation.responses ? { max_output_tokens: maxOutputTokens } : {};
  const dropped = GATEWAY_MEMBERS[operation];
  const spliced = splicedUpstreamRequest(stored, dropped, added);
  if (spliced) return spliced;
  const parsed = JSON.parse(stored.toString('utf8')) as Record<string, unknown>;
  const kept = Object.fromEntries(Object.entries(parsed).filter(([name]) => !dropped.has(name)));
  return { ...kept, ...added };
}

/** What an operation's call needs from the step. */
export interface OperationCallContext {
  provider: UpstreamProvider;
  signal: AbortSignal;
  acc: StreamTokenAccumulator;
  /** The upstream's first byte arrived (TTFB metric). */
  firstByte(): void;
  /** Relays an entry that reaches the client (counted as delivered output). */
  relayOutput(entry: RelayEntry): void;
}

function unsupported(operation: NonChatOperation): never {
  // No retry helps: the channel's provider has no such endpoint. Settlement voids (nothing delivered).
  throw ApplicationFailure.nonRetryable(`the upstream channel does not serve ${operation}`, FailureType.upstreamRejected);
}

/**
 * Calls the upstream for `operation` and relays its output: the JSON answer as one
 * `response` entry, or every stream event as a `chunk` entry (the API writes each as the
 * SSE event its `type` names). The caller adds the terminal entry and bills `acc`.
 */
export async function callOperation(operation: NonChatOperation, ctx: OperationCallContext, body: UpstreamRequestBody, stream: boolean): Promise<void> {
  const { provider, signal, acc } = ctx;
  if (operation === BilledOperation.embeddings) {
    if (!provider.embeddings) unsupported(operation);
    const answer = await provider.embeddings(body, { signal });
    ctx.firstByte();
    addEmbeddingsResponse(acc, answer);
    ctx.relayOutput({ type: 'response', data: answer });
    return;
  }
  if (!stream) {
    if (!provider.respond) unsupported(operation);
    const answer = await provider.respond(body, { signal });
    ctx.firstByte();
    addResponsesResponse(acc, answer);
    ctx.relayOutput({ type: 'response', data: answer });
    return;
  }
  if (!provider.respondStream) unsupported(operation);
  for await (const event of provider.respondStream(body, { signal })) {
    ctx.firstByte();
    addResponsesEvent(acc, event);
    ctx.relayOutput({ type: 'chunk', data: event });
  }
}
