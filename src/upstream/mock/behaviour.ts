/**
 * What the mock upstream does with a request, and how a test asks for it.
 *
 * Tests drive the mock through whatever sits in front of it (the gateway, a
 * Temporal activity), so a per-request override must survive being forwarded:
 * it travels as a `[mock:...]` directive inside the last user message, or as an
 * `x-mock-*` header for callers that control headers. Precedence:
 * header > directive > server defaults.
 *
 * | directive                  | header                   | effect                                   |
 * |----------------------------|--------------------------|------------------------------------------|
 * | `[mock:omit_usage]`        | `x-mock-omit-usage: 1`   | never report usage                       |
 * | `[mock:latency=20]`        | `x-mock-latency: 20`     | 20 ms before every token                 |
 * | `[mock:ttfb=50]`           | `x-mock-ttfb: 50`        | 50 ms before the response headers        |
 * | `[mock:fail=before]`       | `x-mock-fail: before`    | HTTP 500 with an OpenAI error body       |
 * | `[mock:fail=after:3]`      | `x-mock-fail: after:3`   | 3 stream events, then the socket dies    |
 * | `[mock:fail=none]`         | `x-mock-fail: none`      | cancels a failure set by the defaults    |
 * | `[mock:hang]`              | `x-mock-hang: 1`         | never answer (until the client aborts)   |
 * | `[mock:tokens=40]`         | `x-mock-tokens: 40`      | reply length in completion tokens        |
 * | `[mock:status=429]`        | `x-mock-status: 429`     | answer with that error status            |
 * | `[mock:cached=100]`        | `x-mock-cached: 100`     | report 100 prompt tokens as cached       |
 * | `[mock:reasoning=30]`      | `x-mock-reasoning: 30`   | 30 reasoning tokens per choice           |
 * | `[mock:interim_usage]`     | `x-mock-interim-usage: 1`| streams: running usage on every chunk    |
 */
import type { IncomingHttpHeaders } from 'node:http';
import { z } from 'zod';

export interface MockBehaviour {
  /** Reply length in completion tokens, unless the request caps it lower. @default 16 */
  completionTokens: number;
  /** Never report usage (JSON body without `usage`, no usage chunk). @default false */
  omitUsage: boolean;
  /** Delay before each token (JSON answers wait for all tokens). @default 0 */
  tokenLatencyMs: number;
  /** Delay before the response headers. @default 0 */
  firstByteLatencyMs: number;
  /** Answer HTTP 500 with an OpenAI error body instead of a completion. @default false */
  failBeforeFirstChunk: boolean;
  /**
   * Streams only: write exactly this many `data:` events, then destroy the
   * socket (no `[DONE]`). Ignored for JSON answers. @default null (never)
   */
  failAfterChunks: number | null;
  /** Accept the request and never answer; ends only when the client aborts. @default false */
  hang: boolean;
  /** Answer every request with this error status (e.g. 429) and an OpenAI error body. @default null */
  status: number | null;
  /**
   * Prompt tokens the prompt cache served (`prompt_tokens_details.cached_tokens`, at most the
   * prompt); 0 reports no details. @default 0
   */
  cachedTokens: number;
  /**
   * Reasoning tokens per choice, inside `completion_tokens` and within the output cap
   * (`completion_tokens_details.reasoning_tokens`); 0 reports no details. @default 0
   */
  reasoningTokens: number;
  /**
   * Streams with usage: every chunk also carries the running usage, without details; only the
   * final usage chunk has the real figures (a billing that keeps the first usage is wrong). @default false
   */
  interimUsage: boolean;
}

export const DEFAULT_MOCK_BEHAVIOUR: Readonly<MockBehaviour> = Object.freeze({
  completionTokens: 16,
  omitUsage: false,
  tokenLatencyMs: 0,
  firstByteLatencyMs: 0,
  failBeforeFirstChunk: false,
  failAfterChunks: null,
  hang: false,
  status: null,
  cachedTokens: 0,
  reasoningTokens: 0,
  interimUsage: false,
});

const MAX_TOKENS = 100_000;
const MAX_DELAY_MS = 600_000;

const tokens = z.number().int().min(0).max(MAX_TOKENS);
const delayMs = z.number().int().min(0).max(MAX_DELAY_MS);
const errorStatus = z.number().int().min(400).max(599);

/** A partial behaviour, as accepted by `PUT /__mock/defaults` and `setDefaults`. */
export const mockBehaviourPatchSchema = z
  .object({
    completionTokens: tokens,
    omitUsage: z.boolean(),
    tokenLatencyMs: delayMs,
    firstByteLatencyMs: delayMs,
    failBeforeFirstChunk: z.boolean(),
    failAfterChunks: tokens.nullable(),
    hang: z.boolean(),
    status: errorStatus.nullable(),
    cachedTokens: tokens,
    reasoningTokens: tokens,
    interimUsage: z.boolean(),
  })
  .partial()
  .strict();

/** Thrown when a `[mock:...]` directive or an `x-mock-*` header is malformed or unknown. */
export class MockDirectiveError extends Error {
  override name = 'MockDirectiveError';
}

const DIRECTIVE = /\[mock:([a-z_]+)(?:=([^\]]*))?\]/g;

const HEADER_SETTINGS = {
  'x-mock-omit-usage': 'omit_usage',
  'x-mock-latency': 'latency',
  'x-mock-ttfb': 'ttfb',
  'x-mock-fail': 'fail',
  'x-mock-hang': 'hang',
  'x-mock-tokens': 'tokens',
  'x-mock-status': 'status',
  'x-mock-cached': 'cached',
  'x-mock-reasoning': 'reasoning',
  'x-mock-interim-usage': 'interim_usage',
} as const;
type Setting = (typeof HEADER_SETTINGS)[keyof typeof HEADER_SETTINGS];

function flag(setting: Setting, value: string | undefined): boolean {
  if (value === undefined || value === '' || value === 'true' || value === '1') return true;
  if (value === 'false' || value === '0') return false;
  throw new MockDirectiveError(`mock setting '${setting}' expects true/false, got '${value}'`);
}

function integer(setting: Setting, value: string | undefined, schema: z.ZodNumber): number {
  const parsed = schema.safeParse(value !== undefined && /^\d+$/.test(value) ? Number(value) : NaN);
  if (!parsed.success) throw new MockDirectiveError(`mock setting '${setting}' has a bad value '${value ?? ''}'`);
  return parsed.data;
}

function isSetting(name: string): name is Setting {
  return (Object.values(HEADER_SETTINGS) as string[]).includes(name);
}

/** The behaviour change one setting asks for. `fail` sets both failure fields so precedence stays whole. */
function applySetting(patch: Partial<MockBehaviour>, name: string, value: string | undefined): void {
  if (!isSetting(name)) throw new MockDirectiveError(`unknown mock setting '${name}'`);
  switch (name) {
    case 'omit_usage':
      patch.omitUsage = flag(name, value);
      return;
    case 'hang':
      patch.hang = flag(name, value);
      return;
    case 'latency':
      patch.tokenLatencyMs = integer(name, value, delayMs);
      return;
    case 'ttfb':
      patch.firstByteLatencyMs = integer(name, value, delayMs);
      return;
    case 'tokens':
      patch.completionTokens = integer(name, value, tokens);
      return;
    case 'status':
      patch.status = integer(name, value, errorStatus);
      return;
    case 'cached':
      patch.cachedTokens = integer(name, value, tokens);
      return;
    case 'reasoning':
      patch.reasoningTokens = integer(name, value, tokens);
      return;
    case 'interim_usage':
      patch.interimUsage = flag(name, value);
      return;
    case 'fail': {
      if (value === 'before') Object.assign(patch, { failBeforeFirstChunk: true, failAfterChunks: null });
      else if (value === 'none') Object.assign(patch, { failBeforeFirstChunk: false, failAfterChunks: null });
      else if (value?.startsWith('after:')) {
        patch.failBeforeFirstChunk = false;
        patch.failAfterChunks = integer(name, value.slice('after:'.length), tokens);
      } else throw new MockDirectiveError(`mock setting 'fail' expects before, after:N or none, got '${value ?? ''}'`);
      return;
    }
  }
}

/** The overrides written as `[mock:...]` directives in `text`; later ones win. */
export function parseMockDirectives(text: string): Partial<MockBehaviour> {
  const patch: Partial<MockBehaviour> = {};
  for (const match of text.matchAll(DIRECTIVE)) applySetting(patch, match[1] ?? '', match[2]);
  return patch;
}

/** `text` without its `[mock:...]` directives, so they do not change the reply's content. */
export function stripMockDirectives(text: string): string {
  return text.replace(DIRECTIVE, '').trim();
}

/** The overrides carried by `x-mock-*` request headers. */
export function parseMockHeaders(headers: IncomingHttpHeaders): Partial<MockBehaviour> {
  const patch: Partial<MockBehaviour> = {};
  for (const [header, setting] of Object.entries(HEADER_SETTINGS)) {
    const raw = headers[header];
    if (raw === undefined) continue;
    applySetting(patch, setting, (Array.isArray(raw) ? raw.at(-1) : raw)?.trim());
  }
  return patch;
}

/** header > directive > defaults. */
export function resolveMockBehaviour(
  defaults: Readonly<MockBehaviour>,
  fromDirectives: Partial<MockBehaviour>,
  fromHeaders: Partial<MockBehaviour>,
): MockBehaviour {
  return { ...defaults, ...fromDirectives, ...fromHeaders };
}
