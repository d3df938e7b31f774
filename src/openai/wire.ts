/**
 * Parsing what an OpenAI-compatible upstream sends back into our wire types.
 *
 * Lenient where billing does not care (unknown fields pass through, odd finish
 * reasons fold into `stop`), strict where it does: usage must be non-negative
 * integers, content must be a string, and anything that is not a completion or
 * chunk at all is an UpstreamProtocolError.
 */
import { z } from 'zod';
import { UpstreamProtocolError, UpstreamStreamError } from '../upstream/errors';
import { messageRoleSchema } from './chat-request';
import {
  FinishReason,
  type ChatCompletion,
  type ChatCompletionChunk,
  type ChatCompletionUsage,
  type OpenAIErrorBody,
} from './chat-response';

const finishValues = new Set<string>(Object.values(FinishReason));

/** Known reasons as they are; other strings (`eos`, `abort`, ...) count as a normal stop. */
function toFinishReason(value: string | null | undefined): FinishReason | null {
  if (value === null || value === undefined) return null;
  return finishValues.has(value) ? (value as FinishReason) : FinishReason.stop;
}

const tokenCount = z.number().int().nonnegative();
const detailsSchema = z.record(z.unknown()).optional().catch(undefined);

// OpenAI's names, plus the input/output names some compatible servers use.
const rawUsageSchema = z
  .object({
    prompt_tokens: tokenCount.optional(),
    completion_tokens: tokenCount.optional(),
    total_tokens: tokenCount.optional(),
    input_tokens: tokenCount.optional(),
    output_tokens: tokenCount.optional(),
    prompt_tokens_details: detailsSchema,
    completion_tokens_details: detailsSchema,
    // The Responses API's names for the same details (issue 11: cached and reasoning tokens).
    input_tokens_details: detailsSchema,
    output_tokens_details: detailsSchema,
  })
  .passthrough();

/**
 * Usage in OpenAI's shape, or undefined when the upstream reported none (or
 * nonsense): billing then falls back to counting (M6.3) instead of trusting it.
 */
export function normaliseUsage(raw: unknown): ChatCompletionUsage | undefined {
  const parsed = rawUsageSchema.safeParse(raw);
  if (!parsed.success) return undefined;
  const u = parsed.data;
  const prompt = u.prompt_tokens ?? u.input_tokens;
  const completion = u.completion_tokens ?? u.output_tokens;
  if (prompt === undefined || completion === undefined) return undefined;
  const promptDetails = u.prompt_tokens_details ?? u.input_tokens_details;
  const completionDetails = u.completion_tokens_details ?? u.output_tokens_details;
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: u.total_tokens ?? prompt + completion,
    ...(promptDetails ? { prompt_tokens_details: promptDetails } : {}),
    ...(completionDetails ? { completion_tokens_details: completionDetails } : {}),
  };
}

const errorBodySchema = z.object({
  error: z
    .object({
      message: z.string().default(''),
      type: z.string().nullable().optional(),
      code: z.union([z.string(), z.number()]).nullable().optional(),
      param: z.string().nullable().optional(),
    })
    .passthrough(),
});

/** `{code, message}` of an OpenAI error body, or undefined when `raw` is not one. */
export function parseErrorBody(raw: unknown): { code?: string; message: string } | undefined {
  const parsed = errorBodySchema.safeParse(raw);
  if (!parsed.success) return undefined;
  const { code, type, message } = parsed.data.error;
  const name = code ?? type;
  return { message, ...(name !== null && name !== undefined ? { code: String(name) } : {}) };
}

/** Builds an OpenAI error body (used by the mock and by anyone answering in OpenAI's shape). */
export function openAIErrorBody(message: string, type: string, code: string | null): OpenAIErrorBody {
  return { error: { message, type, code, param: null } };
}

/** What a completion and a chunk share around their choices. */
const envelope = {
  id: z.string().default(''),
  created: z.number().default(0),
  model: z.string().default(''),
};

const choiceBase = {
  index: z.number().int().nonnegative().default(0),
  finish_reason: z.string().nullable().optional().transform(toFinishReason),
};

const completionSchema = z
  .object({
    ...envelope,
    choices: z.array(
      z
        .object({
          ...choiceBase,
          message: z
            .object({
              role: z.literal('assistant').catch('assistant'),
              content: z.string().nullable().default(null),
            })
            .passthrough(),
        })
        .passthrough(),
    ),
    usage: z.unknown().optional(),
    system_fingerprint: z.string().nullable().optional(),
  })
  .passthrough();

const chunkSchema = z
  .object({
    ...envelope,
    choices: z.array(
      z
        .object({
          ...choiceBase,
          delta: z
            .object({
              role: messageRoleSchema.optional().catch(undefined),
              content: z.string().nullable().optional(),
            })
            .passthrough()
            .default({}),
        })
        .passthrough(),
    ),
    usage: z.unknown().optional(),
    system_fingerprint: z.string().nullable().optional(),
  })
  .passthrough();

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new UpstreamProtocolError(`${what} is not JSON: ${text.slice(0, 200)}`);
  }
}

function describeIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
}

/** A non-streamed response body; usage normalised (absent when not reported). */
export function parseChatCompletion(text: string): ChatCompletion {
  const raw = parseJson(text, 'completion response');
  const upstreamError = parseErrorBody(raw);
  if (upstreamError) {
    throw new UpstreamProtocolError(`HTTP 200 carrying an error: ${upstreamError.message}`);
  }
  const parsed = completionSchema.safeParse(raw);
  if (!parsed.success) {
    throw new UpstreamProtocolError(`not a chat completion: ${describeIssues(parsed.error)}`);
  }
  const { usage: rawUsage, ...rest } = parsed.data;
  const usage = normaliseUsage(rawUsage);
  return { ...rest, object: 'chat.completion', ...(usage ? { usage } : {}) };
}

/**
 * One SSE `data:` payload of a stream. A payload with an `error` object is the
 * upstream failing mid-stream and becomes an UpstreamStreamError.
 */
export function parseChatCompletionChunk(data: string): ChatCompletionChunk {
  const raw = parseJson(data, 'stream chunk');
  const upstreamError = parseErrorBody(raw);
  if (upstreamError) throw new UpstreamStreamError(upstreamError.code ?? 'stream_error', upstreamError.message);
  const parsed = chunkSchema.safeParse(raw);
  if (!parsed.success) {
    throw new UpstreamProtocolError(`not a chat completion chunk: ${describeIssues(parsed.error)}`);
  }
  const { usage: rawUsage, ...rest } = parsed.data;
  const chunk: ChatCompletionChunk = { ...rest, object: 'chat.completion.chunk' };
  // Keep OpenAI's `usage: null` on intermediate chunks; the gateway may forward them.
  if (rawUsage !== undefined) chunk.usage = normaliseUsage(rawUsage) ?? null;
  return chunk;
}
