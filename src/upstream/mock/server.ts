/**
 * The project's own OpenAI-compatible upstream, over real HTTP, for tests,
 * benchmarks and `npm start` without a real provider.
 *
 * Endpoints: POST /v1/chat/completions (JSON or SSE), POST /v1/embeddings (JSON),
 * POST /v1/responses (JSON or SSE; ./operations.ts), GET /v1/models,
 * GET /v1/models/:id (any id), GET /healthz, and for tests GET|PUT
 * /__mock/defaults and GET /__mock/stats. Behaviour switches: ./behaviour;
 * reply content and token counts: ./reply.
 *
 * It notices a client that goes away (stats().cancelled) and stops writing:
 * that is what lets tests prove a cancelled UpstreamCallStep really closed the
 * upstream request.
 */
import { createHash } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { ZodError, type ZodType, type ZodTypeDef } from 'zod';
import { chatCompletionRequestSchema, type ChatCompletionRequest } from '../../openai/chat-request';
import { lastUserMessageText } from '../../openai/message-text';
import {
  DEFAULT_MOCK_BEHAVIOUR,
  MockDirectiveError,
  mockBehaviourPatchSchema,
  parseMockDirectives,
  parseMockHeaders,
  resolveMockBehaviour,
  type MockBehaviour,
} from './behaviour';
import { fetchImageSizes } from './image-sizes';
import { MOCK_MODELS, mockChunks, mockCompletion, planMockReply } from './reply';
import { openAIErrorBody } from '../../openai/wire';
import { formatSseEvent, SSE_DONE } from '../../openai/sse';
import { embeddingInputs, embeddingsRequestSchema } from '../../openai/embeddings';
import { responsesPromptMessages, responsesRequestSchema } from '../../openai/responses';
import {
  embeddingsDirectiveText,
  formatMockResponseEvent,
  mockEmbeddings,
  mockResponseEvents,
  mockResponseObject,
  planMockResponse,
  responsesDirectiveText,
} from './operations';

export interface MockUpstreamOptions {
  /** @default 0 (any free port) */
  port?: number;
  /** @default '127.0.0.1' */
  host?: string;
  defaults?: Partial<MockBehaviour>;
}

export interface MockUpstreamStats {
  /** Requests received (chat completions, embeddings and responses alike; the counters below too). */
  requests: number;
  /** Chat-completion requests not yet finished. */
  inFlight: number;
  /** Chat-completion requests whose client went away before the answer was complete. */
  cancelled: number;
  /** What the last chat request carried: its size, the SHA-256 of JSON.stringify(messages) as received, its output cap. */
  lastRequest?: { bytes: number; messagesSha256: string; maxTokens?: number };
}

export interface MockUpstream {
  /** Base URL including `/v1`, ready for an OpenAI client's `baseURL`. */
  url: string;
  port: number;
  /** Stops listening and drops open connections (hung requests included). */
  close(): Promise<void>;
  setDefaults(patch: Partial<MockBehaviour>): void;
  stats(): MockUpstreamStats;
}

/** Above the gateway's MAX_REQUEST_BODY_BYTES default (32 MiB): the mock never refuses a body the gateway admits. */
const MAX_BODY_BYTES = 64 * 1024 * 1024;
const ERROR_TYPES: Record<number, { type: string; code: string }> = {
  400: { type: 'invalid_request_error', code: 'invalid_request' },
  401: { type: 'invalid_request_error', code: 'invalid_api_key' },
  404: { type: 'invalid_request_error', code: 'not_found' },
  413: { type: 'invalid_request_error', code: 'request_too_large' },
  429: { type: 'requests', code: 'rate_limit_exceeded' },
  500: { type: 'server_error', code: 'mock_failure' },
  503: { type: 'server_error', code: 'service_unavailable' },
};

/** Thrown when a request body is too large or not a valid chat-completion request. */
class BadRequestError extends Error {
  override name = 'BadRequestError';
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: http.OutgoingHttpHeaders = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function sendError(res: ServerResponse, status: number, message: string): void {
  const kind = ERROR_TYPES[status] ?? { type: status >= 500 ? 'server_error' : 'invalid_request_error', code: `http_${status}` };
  sendJson(res, status, openAIErrorBody(message, kind.type, kind.code), status === 429 ? { 'retry-after': '1' } : {});
}

async function readJson(req: IncomingMessage, seen?: (bytes: number) => void): Promise<unknown> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of req as AsyncIterable<Buffer>) {
    size += part.length;
    if (size > MAX_BODY_BYTES) throw new BadRequestError(413, `request body larger than ${MAX_BODY_BYTES} bytes`);
    parts.push(part);
  }
  seen?.(size);
  try {
    return JSON.parse(Buffer.concat(parts).toString('utf8')) as unknown;
  } catch {
    throw new BadRequestError(400, 'request body is not valid JSON');
  }
}

function parseWith<T>(schema: ZodType<T, ZodTypeDef, unknown>, raw: unknown): T {
  const parsed = schema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  throw new BadRequestError(400, `invalid request: ${issue ? `${issue.path.join('.')}: ${issue.message}` : 'unknown'}`);
}

function parseChatRequest(raw: unknown): ChatCompletionRequest {
  return parseWith(chatCompletionRequestSchema, raw);
}

/** Tracks one chat request's connection: who closed it, and a signal that stops our timers when the client left. */
class Exchange {
  private readonly left = new AbortController();
  /** Set when the mock itself kills the socket (fail=after), which is no cancellation. */
  destroyedByMock = false;

  constructor(
    readonly res: ServerResponse,
    stats: MockUpstreamStats,
  ) {
    stats.requests += 1;
    stats.inFlight += 1;
    res.on('close', () => {
      stats.inFlight -= 1;
      if (!res.writableFinished && !this.destroyedByMock) {
        stats.cancelled += 1;
        this.left.abort();
      }
    });
  }

  get gone(): boolean {
    return this.left.signal.aborted || this.res.destroyed;
  }

  /** Waits `ms`; false when the client went away meanwhile. */
  async pause(ms: number): Promise<boolean> {
    if (ms > 0) await delay(ms, undefined, { signal: this.left.signal }).catch(() => undefined);
    return !this.gone;
  }

  /** Writes and waits until the bytes reached the socket, so a later destroy cannot drop them. */
  write(text: string): Promise<boolean> {
    if (this.gone) return Promise.resolve(false);
    return new Promise((resolve) => {
      const onLeft = (): void => resolve(false);
      this.left.signal.addEventListener('abort', onLeft, { once: true });
      this.res.write(text, (err) => {
        this.left.signal.removeEventListener('abort', onLeft);
        resolve(!err && !this.gone);
      });
    });
  }

  destroy(): void {
    this.destroyedByMock = true;
    this.res.destroy();
  }
}

/** Starts the mock; resolves once it listens. */
export async function startMockUpstream(options: MockUpstreamOptions = {}): Promise<MockUpstream> {
  let defaults: MockBehaviour = { ...DEFAULT_MOCK_BEHAVIOUR, ...mockBehaviourPatchSchema.parse(options.defaults ?? {}) };
  const stats: MockUpstreamStats = { requests: 0, inFlight: 0, cancelled: 0 };
  let sequence = 0;

  async function chatCompletion(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const exchange = new Exchange(res, stats);
    let bytes = 0;
    const request = parseChatRequest(await readJson(req, (n) => (bytes = n)));
    stats.lastRequest = { bytes, messagesSha256: createHash('sha256').update(JSON.stringify(request.messages)).digest('hex'), maxTokens: request.max_tokens ?? request.max_completion_tokens ?? undefined };
    const behaviour = resolveMockBehaviour(
      defaults,
      parseMockDirectives(lastUserMessageText(request.messages)),
      parseMockHeaders(req.headers),
    );
    if (behaviour.hang) return; // the 'close' listener counts the client's abort
    if (!(await exchange.pause(behaviour.firstByteLatencyMs))) return;
    if (behaviour.status !== null) return sendError(res, behaviour.status, `mock status ${behaviour.status}`);
    if (behaviour.failBeforeFirstChunk) return sendError(res, 500, 'mock upstream failed before the first chunk');

    sequence += 1;
    const reply = planMockReply(request, behaviour, `chatcmpl-mock-${sequence}`, await fetchImageSizes(request));
    if (request.stream !== true) {
      if (!(await exchange.pause(behaviour.tokenLatencyMs * reply.pieces.length))) return;
      return sendJson(res, 200, mockCompletion(reply, !behaviour.omitUsage));
    }

    const withUsage = request.stream_options?.include_usage === true && !behaviour.omitUsage;
    const chunks = mockChunks(reply, withUsage);
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
    res.flushHeaders();
    for (const [index, chunk] of chunks.entries()) {
      if (behaviour.failAfterChunks === index) return exchange.destroy();
      if (index < reply.pieces.length && !(await exchange.pause(behaviour.tokenLatencyMs))) return;
      if (!(await exchange.write(formatSseEvent(chunk)))) return;
    }
    if (behaviour.failAfterChunks !== null) return exchange.destroy(); // N >= events: die before [DONE]
    if (await exchange.write(formatSseEvent(SSE_DONE))) res.end();
  }

  /** The behaviour of a request whose directives sit in `directiveText`. */
  const behaviourOf = (req: IncomingMessage, directiveText: string): MockBehaviour =>
    resolveMockBehaviour(defaults, parseMockDirectives(directiveText), parseMockHeaders(req.headers));

  /** What every operation does before it answers: hang, wait for the first byte, fail. False when it answered (or the client left). */
  async function opening(exchange: Exchange, res: ServerResponse, behaviour: MockBehaviour): Promise<boolean> {
    if (behaviour.hang) return false; // the 'close' listener counts the client's abort
    if (!(await exchange.pause(behaviour.firstByteLatencyMs))) return false;
    if (behaviour.status !== null) {
      sendError(res, behaviour.status, `mock status ${behaviour.status}`);
      return false;
    }
    if (behaviour.failBeforeFirstChunk) {
      sendError(res, 500, 'mock upstream failed before the first chunk');
      return false;
    }
    return true;
  }

  /** POST /v1/embeddings: JSON only; `latency` waits once per input. */
  async function embeddings(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const exchange = new Exchange(res, stats);
    let bytes = 0;
    const request = parseWith(embeddingsRequestSchema, await readJson(req, (n) => (bytes = n)));
    stats.lastRequest = { bytes, messagesSha256: createHash('sha256').update(JSON.stringify(request.input)).digest('hex') };
    const behaviour = behaviourOf(req, embeddingsDirectiveText(request));
    if (!(await opening(exchange, res, behaviour))) return;
    if (!(await exchange.pause(behaviour.tokenLatencyMs * embeddingInputs(request.input).length))) return;
    sendJson(res, 200, mockEmbeddings(request, behaviour));
  }

  /** POST /v1/responses: a Response object, or its event stream (`fail=after:N`: N events, then the socket dies). */
  async function responses(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const exchange = new Exchange(res, stats);
    let bytes = 0;
    const request = parseWith(responsesRequestSchema, await readJson(req, (n) => (bytes = n)));
    stats.lastRequest = { bytes, messagesSha256: createHash('sha256').update(JSON.stringify(request.input)).digest('hex'), maxTokens: request.max_output_tokens ?? undefined };
    const behaviour = behaviourOf(req, responsesDirectiveText(request));
    if (!(await opening(exchange, res, behaviour))) return;
    sequence += 1;
    const imageSizes = await fetchImageSizes({ model: request.model, messages: responsesPromptMessages(request) } as unknown as ChatCompletionRequest);
    const reply = planMockResponse(request, behaviour, sequence, imageSizes);
    if (request.stream !== true) {
      if (!(await exchange.pause(behaviour.tokenLatencyMs * reply.pieces.length))) return;
      return sendJson(res, 200, mockResponseObject(reply));
    }
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
    res.flushHeaders();
    for (const [index, event] of mockResponseEvents(reply).entries()) {
      if (behaviour.failAfterChunks === index) return exchange.destroy();
      if (event.type === 'response.output_text.delta' && !(await exchange.pause(behaviour.tokenLatencyMs))) return;
      if (!(await exchange.write(formatMockResponseEvent(event)))) return;
    }
    if (behaviour.failAfterChunks !== null) return exchange.destroy(); // N >= events: die before the end of the stream
    res.end();
  }

  async function putDefaults(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const patch = mockBehaviourPatchSchema.parse(await readJson(req));
    defaults = { ...defaults, ...patch };
    sendJson(res, 200, defaults);
  }

  function modelObject(id: string): Record<string, unknown> {
    return { id, object: 'model', created: 1_700_000_000, owned_by: 'mock-upstream' };
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const method = req.method ?? 'GET';
    if (method === 'POST' && path === '/v1/chat/completions') return chatCompletion(req, res);
    if (method === 'POST' && path === '/v1/embeddings') return embeddings(req, res);
    if (method === 'POST' && path === '/v1/responses') return responses(req, res);
    if (method === 'GET' && path === '/v1/models') {
      return sendJson(res, 200, { object: 'list', data: MOCK_MODELS.map(modelObject) });
    }
    if (method === 'GET' && path.startsWith('/v1/models/')) {
      return sendJson(res, 200, modelObject(decodeURIComponent(path.slice('/v1/models/'.length))));
    }
    if (method === 'GET' && path === '/healthz') return sendJson(res, 200, { status: 'ok' });
    if (method === 'GET' && path === '/__mock/defaults') return sendJson(res, 200, defaults);
    if (method === 'PUT' && path === '/__mock/defaults') return putDefaults(req, res);
    if (method === 'GET' && path === '/__mock/stats') return sendJson(res, 200, { ...stats });
    sendError(res, 404, `no route for ${method} ${path}`);
  }

  const server = http.createServer((req, res) => {
    void route(req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof BadRequestError) sendError(res, err.status, err.message);
      else if (err instanceof MockDirectiveError) sendError(res, 400, err.message);
      else if (err instanceof ZodError) sendError(res, 400, `invalid mock behaviour: ${err.issues[0]?.message ?? ''}`);
      else sendError(res, 500, err instanceof Error ? err.message : String(err));
    });
  });

  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const urlHost = host.includes(':') ? `[${host}]` : host;

  return {
    url: `http://${urlHost}:${port}/v1`,
    port,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
    setDefaults: (patch) => {
      defaults = { ...defaults, ...mockBehaviourPatchSchema.parse(patch) };
    },
    stats: () => ({ ...stats }),
  };
}
