/**
 * What an upstream LLM provider is to the billing pipeline. The wire types it
 * speaks in are OpenAI's (src/openai/); this module holds only the provider's
 * own contract.
 */
import type { ChatCompletion, ChatCompletionChunk } from '../openai/chat-response';
import type { ChatCompletionRequest } from '../openai/chat-request';
import type { SerializedChatRequest } from '../openai/serialized-request';
import type { ResponsesStreamEvent } from '../openai/responses';

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
  /**
   * `POST /embeddings` (issue 11): the upstream's JSON answer as it came (the API relays it
   * unchanged). Optional: a provider without it cannot serve embeddings (the call fails for good).
   */
  embeddings?(req: UpstreamRequestBody, opts?: UpstreamCallOptions): Promise<Record<string, unknown>>;
  /** `POST /responses` with `stream: false`: the Response object as it came. Optional, like embeddings. */
  respond?(req: UpstreamRequestBody, opts?: UpstreamCallOptions): Promise<Record<string, unknown>>;
  /**
   * `POST /responses` with `stream: true`: its events as they came (each `data:` parsed, its
   * `type` the event name), ending after the terminal event (response.completed, .incomplete or
   * .failed); a stream that ends before one throws. An `error` event throws.
   */
  respondStream?(req: UpstreamRequestBody, opts?: UpstreamCallOptions): AsyncIterable<ResponsesStreamEvent>;
}

/** The body of an embeddings or responses call: the stored body's spliced bytes, or an object to serialise. */
export type UpstreamRequestBody = SerializedChatRequest | Readonly<Record<string, unknown>>;
