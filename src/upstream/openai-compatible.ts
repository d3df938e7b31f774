/**
 * The adapter for any OpenAI-compatible upstream (OpenAI itself, vLLM, the
 * project's mock, ...), over Node's global fetch.
 *
 * Every call owns one AbortController that the caller's signal, the timers and
 * an early stop of the stream all abort: cancelling an UpstreamCallStep must
 * close the HTTP request (the upstream stops generating tokens we would pay
 * for), not just stop waiting for it.
 */
import { Readable } from 'node:stream';
import { parseSseEvents, SSE_DONE } from '../openai/sse';
import {
  UpstreamCancelledError,
  UpstreamConnectionError,
  UpstreamCallError,
  UpstreamHttpError,
  UpstreamProtocolError,
  UpstreamStreamError,
  UpstreamTimeoutError,
} from './errors';
import { parseChatCompletion, parseChatCompletionChunk, parseErrorBody } from '../openai/wire';
import type { ChatCompletionRequest } from '../openai/chat-request';
import type { ChatCompletion, ChatCompletionChunk } from '../openai/chat-response';
import { SerializedChatRequest } from '../openai/serialized-request';
import type { UpstreamCallOptions, UpstreamChatRequest, UpstreamProvider, UpstreamRequestBody } from './provider';
import { RESPONSES_TERMINAL_EVENTS, type ResponsesStreamEvent } from '../openai/responses';

/** The request without the client's stream options: the provider sets its own. */
function withoutStreamOptions(req: ChatCompletionRequest): Omit<ChatCompletionRequest, 'stream_options'> {
  const { stream_options: _ignored, ...rest } = req;
  return rest;
}

export interface OpenAICompatibleProviderOptions {
  /** Base URL including the version segment, e.g. `https://api.openai.com/v1`. */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <apiKey>` when set. */
  apiKey?: string;
  /**
   * complete(): limit for the whole call. stream(): limit until the response
   * headers arrive (a long generation is fine as long as chunks keep coming).
   * @default 60000
   */
  timeoutMs?: number;
  /**
   * stream(): the longest silence allowed between two chunks of the body.
   * Time spent by the consumer on a chunk does not count.
   * @default timeoutMs
   */
  streamIdleTimeoutMs?: number;
  /** Headers added to every request (e.g. an organisation id). */
  headers?: Record<string, string>;
}

const DEFAULT_TIMEOUT_MS = 60_000;
const ERROR_BODY_PREVIEW_CHARS = 500;

/** The abort wiring and timer of one upstream call. */
class CallControl {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private phase: UpstreamTimeoutError['phase'] = 'response';
  private timedOut: UpstreamTimeoutError | undefined;

  constructor(
    private readonly callerSignal: AbortSignal | undefined,
    private timeoutMs: number,
  ) {
    if (callerSignal?.aborted) this.controller.abort(callerSignal.reason);
    else callerSignal?.addEventListener('abort', this.onCallerAbort, { once: true });
    this.resumeTimer();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** From now on the timer measures silence between stream chunks. */
  switchToIdleTimeout(ms: number): void {
    this.phase = 'stream-idle';
    this.timeoutMs = ms;
    this.resumeTimer();
  }

  pauseTimer(): void {
    clearTimeout(this.timer);
  }

  /** Starts the current limit afresh from now. */
  resumeTimer(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(this.onTimeout, this.timeoutMs);
  }

  /** Maps whatever the call threw to one of the upstream errors. */
  translate(err: unknown): Error {
    if (err instanceof UpstreamCallError) return err;
    if (this.callerSignal?.aborted) return new UpstreamCancelledError(this.callerSignal.reason);
    if (this.timedOut) return this.timedOut;
    return new UpstreamConnectionError(describeNetworkError(err), { cause: err });
  }

  /** Releases the timer, the listener and (if still open) the HTTP request. */
  dispose(): void {
    clearTimeout(this.timer);
    this.callerSignal?.removeEventListener('abort', this.onCallerAbort);
    if (!this.controller.signal.aborted) this.controller.abort(new Error('upstream call finished'));
  }

  private readonly onCallerAbort = (): void => {
    this.controller.abort(this.callerSignal?.reason);
  };

  private readonly onTimeout = (): void => {
    this.timedOut = new UpstreamTimeoutError(this.timeoutMs, this.phase);
    this.controller.abort(this.timedOut);
  };
}

/** The body of an SSE answer; an HTTP error or any other content type is the upstream's failure. */
async function eventStreamOf(res: Response): Promise<ReadableStream<Uint8Array>> {
  if (!res.ok) throw await httpErrorFrom(res);
  const contentType = res.headers.get('content-type') ?? '';
  if (!contentType.includes('text/event-stream') || res.body === null) {
    const preview = (await res.text()).slice(0, 200);
    throw new UpstreamProtocolError(`expected an event stream, got '${contentType}': ${preview}`);
  }
  return res.body;
}

/**
 * undici reports "fetch failed" and hides the useful part (ECONNREFUSED, "other
 * side closed") in `cause`. Duck-typed: errors from Node internals may come from
 * another realm (jest's VM), where `instanceof Error` is false.
 */
function describeNetworkError(err: unknown): string {
  const parts: string[] = [];
  for (let current = err, depth = 0; typeof current === 'object' && current !== null && depth < 3; depth += 1) {
    const { message, code } = current as { message?: unknown; code?: unknown };
    if (typeof message === 'string' && message !== '') parts.push(message);
    if (typeof code === 'string' && !parts.some((p) => p.includes(code))) parts.push(code);
    current = (current as { cause?: unknown }).cause;
  }
  return `upstream connection failed (${parts.length > 0 ? parts.join(': ') : String(err)})`;
}

function parseRetryAfterMs(headers: Headers): number | undefined {
  const ms = headers.get('retry-after-ms');
  if (ms !== null && /^\d+(\.\d+)?$/.test(ms.trim())) return Math.ceil(Number(ms));
  const value = headers.get('retry-after');
  if (value === null) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

async function httpErrorFrom(res: Response): Promise<UpstreamHttpError> {
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text) as unknown;
  } catch {
    parsed = undefined;
  }
  const body = parseErrorBody(parsed);
  const message = body?.message || text.slice(0, ERROR_BODY_PREVIEW_CHARS) || res.statusText;
  return new UpstreamHttpError(res.status, body?.code ?? `http_${res.status}`, message, parseRetryAfterMs(res.headers));
}

/** Creates an {@link UpstreamProvider} for an OpenAI-compatible base URL. */
export function createOpenAICompatibleProvider(options: OpenAICompatibleProviderOptions): UpstreamProvider {
  const base = options.baseUrl.replace(/\/+$/, '');
  const endpoint = `${base}/chat/completions`;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const streamIdleTimeoutMs = options.streamIdleTimeoutMs ?? timeoutMs;

  /**
   * A serialized request goes out as its pieces with their length (fetch sends an iterable body
   * with a Content-Length as a fixed-length body): no buffer of the whole body is made here.
   */
  function post(
    body: Omit<ChatCompletionRequest, 'stream_options'> | UpstreamRequestBody,
    extra: Readonly<Record<string, unknown>>,
    accept: string,
    call: CallControl,
    headers?: Record<string, string>,
    url: string = endpoint,
  ): Promise<Response> {
    const common = {
      'content-type': 'application/json',
      accept,
      ...(options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {}),
      ...options.headers,
      ...headers,
    };
    if (body instanceof SerializedChatRequest) {
      const { pieces, length } = body.body(extra);
      return fetch(url, {
        method: 'POST',
        headers: { ...common, 'content-length': String(length) },
        body: Readable.from(pieces),
        duplex: 'half',
        signal: call.signal,
      });
    }
    return fetch(url, { method: 'POST', headers: common, body: JSON.stringify({ ...body, ...extra }), signal: call.signal });
  }

  async function complete(req: UpstreamChatRequest, opts: UpstreamCallOptions = {}): Promise<ChatCompletion> {
    const call = new CallControl(opts.signal, timeoutMs);
    try {
      // A JSON answer was asked for, whatever the client's request said (a serialized request has no stream members).
      const res = req instanceof SerializedChatRequest
        ? await post(req, { stream: false }, 'application/json', call, opts.headers)
        : await post(withoutStreamOptions(req), { stream: false }, 'application/json', call, opts.headers);
      if (!res.ok) throw await httpErrorFrom(res);
      return parseChatCompletion(await res.text());
    } catch (err) {
      throw call.translate(err);
    } finally {
      call.dispose();
    }
  }

  async function* stream(
    req: UpstreamChatRequest,
    opts: UpstreamCallOptions = {},
  ): AsyncGenerator<ChatCompletionChunk, void, undefined> {
    const call = new CallControl(opts.signal, timeoutMs);
    try {
      // Usage is what we bill on, so we always ask for it; whether the gateway's
      // own client sees it is the gateway's decision.
      const clientOptions = req instanceof SerializedChatRequest ? undefined : req.stream_options;
      const extra = { stream: true, stream_options: { ...clientOptions, include_usage: true } };
      const res = await post(req instanceof SerializedChatRequest ? req : withoutStreamOptions(req), extra, 'text/event-stream', call, opts.headers);
      const body = await eventStreamOf(res);
      call.switchToIdleTimeout(streamIdleTimeoutMs);
      for await (const event of parseSseEvents(body)) {
        if (event.data === SSE_DONE) return;
        const chunk = parseChatCompletionChunk(event.data);
        call.pauseTimer(); // the consumer's time is not upstream silence
        yield chunk;
        call.resumeTimer();
      }
      throw new UpstreamProtocolError('stream ended without data: [DONE]');
    } catch (err) {
      throw call.translate(err);
    } finally {
      call.dispose();
    }
  }

  /** A JSON answer of another endpoint (issue 11), as it came: the API relays it unchanged. */
  async function postJson(path: string, req: UpstreamRequestBody, extra: Readonly<Record<string, unknown>>, opts: UpstreamCallOptions): Promise<Record<string, unknown>> {
    const call = new CallControl(opts.signal, timeoutMs);
    try {
      const res = await post(req, extra, 'application/json', call, opts.headers, `${base}${path}`);
      if (!res.ok) throw await httpErrorFrom(res);
      return parseJsonObject(await res.text());
    } catch (err) {
      throw call.translate(err);
    } finally {
      call.dispose();
    }
  }

  async function* respondStream(req: UpstreamRequestBody, opts: UpstreamCallOptions = {}): AsyncGenerator<ResponsesStreamEvent, void, undefined> {
    const call = new CallControl(opts.signal, timeoutMs);
    try {
      const res = await post(req, { stream: true }, 'text/event-stream', call, opts.headers, `${base}/responses`);
      const body = await eventStreamOf(res);
      call.switchToIdleTimeout(streamIdleTimeoutMs);
      for await (const sse of parseSseEvents(body)) {
        if (sse.data === SSE_DONE) break; // not sent by OpenAI's Responses API, but harmless from a compatible server
        const event = parseResponsesEvent(sse.data);
        if (event.type === 'error') {
          throw new UpstreamStreamError(typeof event.code === 'string' ? event.code : 'error', typeof event.message === 'string' ? event.message : 'error event');
        }
        call.pauseTimer(); // the consumer's time is not upstream silence
        yield event;
        call.resumeTimer();
        if (RESPONSES_TERMINAL_EVENTS.has(event.type)) return;
      }
      throw new UpstreamProtocolError('response stream ended before its terminal event');
    } catch (err) {
      throw call.translate(err);
    } finally {
      call.dispose();
    }
  }

  return {
    complete,
    stream,
    embeddings: (req, opts = {}) => postJson('/embeddings', req, {}, opts),
    respond: (req, opts = {}) => postJson('/responses', req, { stream: false }, opts),
    respondStream,
  };
}

/** A JSON object answer, or an UpstreamProtocolError. */
function parseJsonObject(text: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text) as unknown;
  } catch {
    throw new UpstreamProtocolError('upstream answer is not valid JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new UpstreamProtocolError('upstream answer is not a JSON object');
  return parsed as Record<string, unknown>;
}

/** One Responses stream event: a JSON object with a string `type`. */
function parseResponsesEvent(data: string): ResponsesStreamEvent {
  const event = parseJsonObject(data);
  if (typeof event.type !== 'string') throw new UpstreamProtocolError('response stream event without a type');
  return event as ResponsesStreamEvent;
}
