/**
 * What an upstream LLM provider is to the billing pipeline. The wire types it
 * speaks in are OpenAI's (src/openai/); this module holds only the provider's
 * own contract.
 */
import type { ChatCompletion, ChatCompletionChunk } from '../openai/chat-response';
import type { ChatCompletionRequest } from '../openai/chat-request';
import type { SerializedChatRequest } from '../openai/serialized-request';

/** What a provider is asked to send: a request object, or the stored body's own bytes (../openai/serialized-request.ts). */
export type UpstreamChatRequest = ChatCompletionRequest | SerializedChatRequest;

/** Per-call options; `signal` aborts the HTTP request itself, not just our wait for it. */
export interface UpstreamCallOptions {
  signal?: AbortSignal;
  /** Extra request headers for this call (they win over the provider's own). */
  headers?: Record<string, string>;
}

/**
 * One upstream LLM provider. Adapters translate to and from the provider's own
 * protocol and normalise usage to OpenAI's `ChatCompletionUsage`, so the billing
 * steps never see provider-specific shapes.
 */
export interface UpstreamProvider {
  /** A non-streamed completion; `stream` in the request is ignored. */
  complete(req: UpstreamChatRequest, opts?: UpstreamCallOptions): Promise<ChatCompletion>;
  /**
   * A streamed completion. The HTTP request starts on the first `next()`;
   * stopping the iteration early (break/return) releases the connection.
   */
  stream(req: UpstreamChatRequest, opts?: UpstreamCallOptions): AsyncIterable<ChatCompletionChunk>;
}
