/**
 * The soak's load: who sends (tenants and keys with quotas, budgets and rate limits small
 * enough to be hit), what they send (the request kinds, one entry each in REQUEST_KINDS: a
 * new kind of request is one more entry), and the client that sends it and writes down
 * exactly what it received, for the invariants to compare with the ledger.
 */
import { requestIdFor } from '../../src/services/billed-requests';
import { CHAOS_MODEL } from './system';
import { parseSseEvents } from '../../src/openai/sse';

export interface Subject {
  tenantId: string;
  apiKeyId: string;
  key: string;
  /** Hit on purpose: which limit this subject is there to exercise. */
  exercises: string;
}

export interface SubjectSpec {
  tenantId: string;
  tenant: { quota_limit_micros: number; rpm_limit?: number };
  keys: Array<{ name: string; exercises: string; budget_micros?: number; rpm_limit?: number; tpm_limit?: number; max_parallel_requests?: number }>;
}

/** Tenants and keys of a run of `requests` requests: the small quota and budget scale with it, so they run out mid-run. */
export function subjectSpecs(requests: number, runId: string): SubjectSpec[] {
  return [
    { tenantId: `rich-${runId}`, tenant: { quota_limit_micros: 1_000_000_000 }, keys: [
      { name: 'open', exercises: 'none' },
      { name: 'rpm', exercises: 'key requests per minute', rpm_limit: 40 },
      { name: 'parallel', exercises: 'key parallel requests', max_parallel_requests: 2 },
    ] },
    { tenantId: `poor-${runId}`, tenant: { quota_limit_micros: Math.max(1_500, requests * 4) }, keys: [{ name: 'open', exercises: 'tenant quota' }] },
    { tenantId: `mid-${runId}`, tenant: { quota_limit_micros: 1_000_000_000, rpm_limit: 150 }, keys: [
      { name: 'budget', exercises: 'key budget', budget_micros: Math.max(1_500, requests * 5) },
      { name: 'tpm', exercises: 'key tokens per minute', tpm_limit: 2_500 },
    ] },
  ];
}

export interface ClientRecord {
  kind: string;
  tenantId: string;
  apiKeyId: string;
  /** From X-Request-Id, else derived from the Idempotency-Key (the API died before answering). */
  requestId?: string;
  idempotencyKey?: string;
  conversationId?: string;
  /** HTTP status, or 0 when no answer arrived at all. */
  status: number;
  errorCode?: string;
  /** The error's message (its first 200 characters), for a look at an unexpected answer. */
  errorMessage?: string;
  stream: boolean;
  /** The completion text the client received. */
  text: string;
  usage?: { prompt_tokens: number; completion_tokens: number };
  /** The whole answer arrived (JSON body parsed, or the stream's [DONE]). */
  complete: boolean;
  /** The client went away on purpose mid-stream. */
  disconnected: boolean;
  /** The connection broke mid-answer (an API killed under it). */
  broken: boolean;
  /** Connection refused by the first API chosen: sent again to the other one. */
  failedOver: boolean;
  /** Answers 502/503 that the client retried (as the OpenAI SDKs do), with the same Idempotency-Key. */
  retries: number;
}

/** The billed endpoints the load calls. */
export type BilledPath = '/v1/chat/completions' | '/v1/embeddings' | '/v1/responses';

export interface PlannedRequest {
  kind: string;
  /** @default '/v1/chat/completions' */
  path?: BilledPath;
  body: Record<string, unknown>;
  headers: Record<string, string>;
  /** Abort the stream after this many content chunks. */
  disconnectAfterChunks?: number;
}

export interface KindContext {
  rng: () => number;
  subject: Subject;
  /** A fresh unique Idempotency-Key. */
  newKey(): string;
  /** One of a few conversations of the subject's tenant. */
  conversationId(): string;
}

export interface RequestKind {
  name: string;
  weight: number;
  /** The request(s) one draw of this kind sends at once (a duplicate is two). */
  plan(ctx: KindContext): PlannedRequest[];
}

const WORDS = ['ledger', 'quota', 'settle', 'reserve', 'refund', 'tenant', 'budget', 'stream', 'token', 'micro', 'admit', 'void'];
function prompt(rng: () => number, directives: string): string {
  const n = 3 + Math.floor(rng() * 12);
  return `${Array.from({ length: n }, () => WORDS[Math.floor(rng() * WORDS.length)]).join(' ')} ${directives}`;
}
const tokens = (rng: () => number): number => 4 + Math.floor(rng() * 20);
const chat = (ctx: KindContext, directives: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  model: CHAOS_MODEL, messages: [{ role: 'user', content: prompt(ctx.rng, directives) }], ...extra,
});

/** The mix. Weights are relative. */
export const REQUEST_KINDS: readonly RequestKind[] = [
  { name: 'chat', weight: 30, plan: (ctx) => [{ kind: 'chat', body: chat(ctx, `[mock:tokens=${tokens(ctx.rng)}]`), headers: { 'idempotency-key': ctx.newKey() } }] },
  { name: 'chat-no-idempotency-key', weight: 8, plan: (ctx) => [{ kind: 'chat-no-idempotency-key', body: chat(ctx, `[mock:tokens=${tokens(ctx.rng)}]`), headers: {} }] },
  { name: 'chat-omit-usage', weight: 6, plan: (ctx) => [{ kind: 'chat-omit-usage', body: chat(ctx, `[mock:tokens=${tokens(ctx.rng)}] [mock:omit_usage]`), headers: { 'idempotency-key': ctx.newKey() } }] },
  { name: 'stream', weight: 25, plan: (ctx) => [{ kind: 'stream', body: chat(ctx, `[mock:tokens=${tokens(ctx.rng)}] [mock:latency=5]`, { stream: true, stream_options: { include_usage: true } }), headers: { 'idempotency-key': ctx.newKey() } }] },
  { name: 'stream-disconnect', weight: 8, plan: (ctx) => [{ kind: 'stream-disconnect', body: chat(ctx, '[mock:tokens=40] [mock:latency=20]', { stream: true, stream_options: { include_usage: true } }), headers: { 'idempotency-key': ctx.newKey() }, disconnectAfterChunks: 2 + Math.floor(ctx.rng() * 4) }] },
  { name: 'duplicate', weight: 8, plan: (ctx) => {
    const key = ctx.newKey();
    const body = chat(ctx, `[mock:tokens=${tokens(ctx.rng)}]`);
    return [{ kind: 'duplicate', body, headers: { 'idempotency-key': key } }, { kind: 'duplicate', body, headers: { 'idempotency-key': key } }];
  } },
  { name: 'embeddings', weight: 8, plan: (ctx) => [{ kind: 'embeddings', path: '/v1/embeddings', body: { model: CHAOS_MODEL, input: [prompt(ctx.rng, ''), prompt(ctx.rng, '')] }, headers: { 'idempotency-key': ctx.newKey() } }] },
  { name: 'responses', weight: 6, plan: (ctx) => [{ kind: 'responses', path: '/v1/responses', body: { model: CHAOS_MODEL, input: prompt(ctx.rng, `[mock:tokens=${tokens(ctx.rng)}]`) }, headers: { 'idempotency-key': ctx.newKey() } }] },
  { name: 'responses-stream', weight: 6, plan: (ctx) => [{ kind: 'responses-stream', path: '/v1/responses', body: { model: CHAOS_MODEL, input: prompt(ctx.rng, `[mock:tokens=${tokens(ctx.rng)}] [mock:latency=5]`), stream: true }, headers: { 'idempotency-key': ctx.newKey() } }] },
  { name: 'conversation', weight: 15, plan: (ctx) => [{ kind: 'conversation', body: chat(ctx, `[mock:tokens=${tokens(ctx.rng)}]`), headers: { 'idempotency-key': ctx.newKey(), 'x-conversation-id': ctx.conversationId() } }] },
];

/** Picks a kind by weight. */
export function pickKind(kinds: readonly RequestKind[], rng: () => number): RequestKind {
  const total = kinds.reduce((s, k) => s + k.weight, 0);
  let r = rng() * total;
  for (const k of kinds) {
    r -= k.weight;
    if (r < 0) return k;
  }
  return kinds[kinds.length - 1]!;
}

interface StreamEvent {
  type?: string;
  delta?: string;
  choices?: Array<{ delta?: { content?: string } }>;
  usage?: ClientRecord['usage'] | null;
  response?: { usage?: { input_tokens: number; output_tokens: number } };
  error?: { code?: string };
}

/** The text and usage of a complete JSON answer of any billed endpoint. */
function readJsonAnswer(parsed: JsonAnswer): { text: string; usage?: ClientRecord['usage'] } {
  if (parsed.object === 'list') return { text: '', usage: parsed.usage?.prompt_tokens !== undefined ? { prompt_tokens: parsed.usage.prompt_tokens, completion_tokens: 0 } : undefined };
  if (parsed.object === 'response') {
    const text = (parsed.output ?? []).flatMap((o) => o.content ?? []).map((c) => c.text ?? '').join('');
    return { text, usage: parsed.usage?.input_tokens !== undefined ? { prompt_tokens: parsed.usage.input_tokens, completion_tokens: parsed.usage.output_tokens ?? 0 } : undefined };
  }
  return {
    text: parsed.choices?.[0]?.message?.content ?? '',
    usage: parsed.usage?.prompt_tokens !== undefined ? { prompt_tokens: parsed.usage.prompt_tokens, completion_tokens: parsed.usage.completion_tokens ?? 0 } : undefined,
  };
}

interface JsonAnswer {
  object?: string;
  choices?: Array<{ message?: { content?: string } }>;
  output?: Array<{ content?: Array<{ text?: string }> }>;
  usage?: { prompt_tokens?: number; completion_tokens?: number; input_tokens?: number; output_tokens?: number };
  error?: { code?: string; message?: string };
}

interface StreamRead { text: string; usage?: ClientRecord['usage']; done: boolean; chunks: number; errorCode?: string }

/** Reads SSE until [DONE], an error event, the connection's end, or `stopAfter` content chunks (then aborts). */
async function readStream(res: Response, stopAfter: number | undefined, abort: AbortController): Promise<StreamRead & { broken: boolean }> {
  const out: StreamRead = { text: '', done: false, chunks: 0 };
  let stopped = false;
  try {
    // The project's own SSE parser (src/openai/sse.ts), the one the upstream provider reads with.
    for await (const { data } of parseSseEvents(res.body!)) {
      if (data === '') continue;
      if (data === '[DONE]') { out.done = true; continue; }
      const parsed = JSON.parse(data) as StreamEvent;
      if (parsed.error) out.errorCode = parsed.error.code ?? 'error';
      // Chat chunks carry choices[].delta; the Responses API's events a type.
      const content = parsed.type === 'response.output_text.delta' ? parsed.delta : parsed.choices?.[0]?.delta?.content;
      if (content) { out.text += content; out.chunks += 1; }
      if (parsed.usage) out.usage = { prompt_tokens: parsed.usage.prompt_tokens, completion_tokens: parsed.usage.completion_tokens };
      if (parsed.type === 'response.completed') {
        out.done = true;
        const u = parsed.response?.usage;
        if (u) out.usage = { prompt_tokens: u.input_tokens, completion_tokens: u.output_tokens };
      }
      if (parsed.type === 'response.failed' || parsed.type === 'error') out.errorCode ??= parsed.type;
      if (stopAfter !== undefined && out.chunks >= stopAfter) {
        stopped = true;
        break;
      }
    }
    return { ...out, broken: false };
  } catch {
    // Leaving the loop cancels the body; a cancel that rejects is still our own disconnect.
    return { ...out, broken: !stopped };
  } finally {
    if (stopped) abort.abort();
  }
}

export interface Sender {
  /** Sends one planned request through API `apiIndex` (the other on a refused connection). */
  send(planned: PlannedRequest, subject: Subject, apiIndex: number): Promise<ClientRecord>;
}

export function createSender(apiUrl: (i: number) => string): Sender {
  return {
    async send(planned, subject, apiIndex) {
      const idempotencyKey = planned.headers['idempotency-key'];
      const record: ClientRecord = {
        kind: planned.kind, tenantId: subject.tenantId, apiKeyId: subject.apiKeyId, idempotencyKey,
        conversationId: planned.headers['x-conversation-id'],
        requestId: idempotencyKey ? requestIdFor(subject.tenantId, idempotencyKey) : undefined,
        status: 0, stream: planned.body.stream === true, text: '', complete: false, disconnected: false, broken: false, failedOver: false, retries: 0,
      };
      for (let attempt = 0; attempt < 8; attempt++) {
        const abort = new AbortController();
        const timer = setTimeout(() => abort.abort(), 120_000);
        let res: Response;
        try {
          res = await fetch(`${apiUrl(apiIndex + attempt)}${planned.path ?? '/v1/chat/completions'}`, {
            method: 'POST', signal: abort.signal,
            headers: { authorization: `Bearer ${subject.key}`, 'content-type': 'application/json', ...planned.headers },
            body: JSON.stringify(planned.body),
          });
        } catch {
          // Nothing reached an API (refused: it is down): a load balancer sends it to the other.
          clearTimeout(timer);
          record.failedOver = true;
          await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
          continue;
        }
        try {
          record.status = res.status;
          record.requestId = res.headers.get('x-request-id') ?? record.requestId;
          if (res.status === 200 && record.stream) {
            const read = await readStream(res, planned.disconnectAfterChunks, abort);
            Object.assign(record, { text: read.text, usage: read.usage, complete: read.done && !read.errorCode, errorCode: read.errorCode, broken: read.broken });
            record.disconnected = planned.disconnectAfterChunks !== undefined && !read.done && !read.broken;
          } else {
            let text: string;
            try {
              text = await res.text();
            } catch {
              record.broken = true;
              return record;
            }
            const parsed = parseJson(text) as JsonAnswer;
            if (res.status === 200) {
              Object.assign(record, readJsonAnswer(parsed));
              record.complete = true;
            } else {
              record.errorCode = parsed.error?.code ?? 'unknown';
              record.errorMessage = parsed.error?.message?.slice(0, 200);
              // A dependency restarting: retry after Retry-After, twice, as an OpenAI SDK would.
              if ((res.status === 503 || res.status === 502) && record.retries < 2) {
                record.retries += 1;
                await new Promise((r) => setTimeout(r, 1000 * Number(res.headers.get('retry-after') ?? '1')));
                continue;
              }
            }
          }
          return record;
        } finally {
          clearTimeout(timer);
        }
      }
      return record;
    },
  };
}

/** The outcome a record counts under in the report. */
export function outcomeOf(r: ClientRecord): string {
  if (r.status === 0) return 'no answer';
  if (r.status === 200) {
    if (r.disconnected) return '200 client disconnected';
    if (r.broken) return '200 connection broke';
    if (!r.complete) return `200 stream ended with ${r.errorCode ?? 'no [DONE]'}`;
    return '200 completed';
  }
  return `${r.status} ${r.errorCode ?? ''}`.trim();
}

function parseJson(text: string): unknown {
  try {
    return text ? JSON.parse(text) : {};
  } catch {
    return { error: { code: 'not_json' } };
  }
}
