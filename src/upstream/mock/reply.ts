/**
 * The mock upstream's deterministic answers and its token accounting.
 *
 * Billing tests need to know the exact usage in advance, so the reply is built
 * token by token: every word of REPLY_WORDS is one cl100k_base token both alone
 * and after a space, and the cl100k pre-tokeniser splits text at " word"
 * boundaries, so a reply of N words is exactly N completion tokens, and
 * tiktoken's count of the accumulated stream text equals the reported usage
 * (M6.2) for every model counted with cl100k_base.
 *
 * Prompt tokens are the gateway's own count (`countPromptTokens` of
 * src/billing/token-count.ts, with the request's model), directives included
 * (they are part of what the client sent). The mock is an upstream like any
 * other; one reporting exactly our estimate keeps the figures of billing tests
 * predictable, and there is no second prompt formula to keep in step. Images
 * and definitions are the exceptions that make reservations testable: the mock
 * counts an http(s) image at its real size (it fetches it: ./image-sizes.ts),
 * where the gateway reserves the tile rule's worst case, and tool and
 * response-format definitions as a provider renders them (./definition-prompt.ts),
 * where the gateway reserves an upper bound.
 */
import { get_encoding } from 'tiktoken';
import type { ImageSize } from '../../billing/image-dimensions';
import { countPromptTokens } from '../../billing/token-count';
import type { ChatCompletionRequest } from '../../openai/chat-request';
import { FinishReason, type ChatCompletion, type ChatCompletionChunk, type ChatCompletionUsage } from '../../openai/chat-response';
import { lastUserMessageText } from '../../openai/message-text';
import { stripMockDirectives, type MockBehaviour } from './behaviour';
import { definitionPromptTokens } from './definition-prompt';

export const MOCK_MODELS = ['gpt-4o-mini', 'gpt-4o', 'mock-small'] as const;

const REPLY_WORDS = [
  'ledger', 'quota', 'tenant', 'token', 'budget', 'stream', 'reserve', 'credit',
  'debit', 'balance', 'request', 'model', 'window', 'limit', 'charge', 'refund',
  'account', 'invoice', 'meter', 'usage', 'price', 'cost', 'rate', 'signal',
  'channel', 'record', 'commit', 'pending', 'batch', 'sync', 'lock', 'route',
] as const;

let wordsChecked = false;
/**
 * Proves once per process that every reply word is a single cl100k token, alone
 * and after a space: the N-words-are-N-tokens guarantee rests on it.
 */
function checkReplyWords(): void {
  if (wordsChecked) return;
  const encoder = get_encoding('cl100k_base');
  try {
    for (const word of REPLY_WORDS) {
      if (encoder.encode(word).length !== 1 || encoder.encode(` ${word}`).length !== 1) {
        throw new Error(`mock reply word '${word}' is not a single cl100k token`);
      }
    }
  } finally {
    encoder.free();
  }
  wordsChecked = true;
}

/** FNV-1a: a stable 32-bit seed from the prompt, the same in every process. */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

/**
 * The reply as token-sized pieces ("word", " word", ...): `count` words picked
 * by a small PRNG (mulberry32) seeded from `seedText`.
 */
export function replyPieces(seedText: string, count: number): string[] {
  checkReplyWords();
  let state = fnv1a(seedText);
  const pieces: string[] = [];
  for (let i = 0; i < count; i += 1) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const index = ((t ^ (t >>> 14)) >>> 0) % REPLY_WORDS.length;
    pieces.push(`${i === 0 ? '' : ' '}${REPLY_WORDS[index] ?? 'token'}`);
  }
  return pieces;
}

/** One choice of the reply. */
export interface MockChoice {
  pieces: string[];
  finishReason: FinishReason;
}

/** Everything the mock needs to answer one request, streamed or not. */
export interface MockReply {
  id: string;
  created: number;
  model: string;
  /** `n` choices (issue 11), each of the same length; choice 0 is what a request without `n` gets. */
  choices: MockChoice[];
  usage: ChatCompletionUsage;
}

/**
 * Plans the reply: `n` choices (default 1) of min(behaviour.completionTokens, the request's
 * cap) tokens each, where the cap is the smaller of max_completion_tokens and max_tokens if
 * set. Like a provider, the usage counts every choice's completion, reasoning tokens (billed
 * inside completion_tokens, within the cap) and the tool and response-format definitions in
 * the prompt (./definition-prompt.ts); the prompt cache serves `behaviour.cachedTokens` of it.
 */
export function planMockReply(req: ChatCompletionRequest, behaviour: MockBehaviour, id: string, imageSizes: ReadonlyMap<string, ImageSize> = new Map()): MockReply {
  const caps = [req.max_completion_tokens, req.max_tokens].filter((c): c is number => typeof c === 'number');
  const cap = caps.length > 0 ? Math.min(...caps) : Number.POSITIVE_INFINITY;
  const reasoningTokens = Math.min(behaviour.reasoningTokens, cap);
  const visibleTokens = Math.min(behaviour.completionTokens, cap - reasoningTokens);
  const promptTokens = countPromptTokens(req.messages, req.model, { imageSize: (url) => imageSizes.get(url) }) + definitionPromptTokens(req);
  const n = req.n ?? 1;
  const seed = stripMockDirectives(lastUserMessageText(req.messages));
  const finishReason = visibleTokens < behaviour.completionTokens ? FinishReason.length : FinishReason.stop;
  const choices: MockChoice[] = Array.from({ length: n }, (_, index) => ({
    pieces: replyPieces(index === 0 ? seed : `${seed}#${index}`, visibleTokens),
    finishReason,
  }));
  const completionTokens = n * (visibleTokens + reasoningTokens);
  const cachedTokens = Math.min(behaviour.cachedTokens, promptTokens);
  return {
    id,
    created: Math.floor(Date.now() / 1000),
    model: req.model,
    choices,
    usage: {
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
      ...(behaviour.cachedTokens > 0 ? { prompt_tokens_details: { cached_tokens: cachedTokens, audio_tokens: 0 } } : {}),
      ...(behaviour.reasoningTokens > 0 ? { completion_tokens_details: { reasoning_tokens: n * reasoningTokens, audio_tokens: 0 } } : {}),
    },
  };
}

/** The JSON answer. */
export function mockCompletion(reply: MockReply, withUsage: boolean): ChatCompletion {
  return {
    id: reply.id,
    object: 'chat.completion',
    created: reply.created,
    model: reply.model,
    choices: reply.choices.map((choice, index) => ({
      index,
      message: { role: 'assistant', content: choice.pieces.join(''), refusal: null },
      logprobs: null,
      finish_reason: choice.finishReason,
    })),
    ...(withUsage ? { usage: reply.usage } : {}),
    system_fingerprint: 'fp_mock',
  };
}

/** How many token-carrying chunks the stream of `reply` starts with (the ones the token latency delays). */
export function tokenChunkCount(reply: MockReply): number {
  return Math.max(1, ...reply.choices.map((c) => c.pieces.length));
}

/**
 * The stream's events in order, as OpenAI sends them: one chunk per token position carrying
 * every choice's delta at it (the first also carries the role; an empty reply still gets one
 * role chunk), a chunk with the finish reasons, then, when usage was asked for, a usage chunk
 * with `choices: []` (the earlier chunks then carry `usage: null`; with `interimUsage`, a
 * running usage without details instead, as some providers send: only the last one is final).
 */
export function mockChunks(reply: MockReply, withUsage: boolean, interimUsage = false): ChatCompletionChunk[] {
  const base = { id: reply.id, object: 'chat.completion.chunk' as const, created: reply.created, model: reply.model };
  const positions = tokenChunkCount(reply);
  const usageAt = (position: number): { usage?: ChatCompletionUsage | null } => {
    if (!withUsage) return {};
    if (!interimUsage) return { usage: null };
    const completion = Math.min(position, positions) * reply.choices.length;
    return { usage: { prompt_tokens: reply.usage.prompt_tokens, completion_tokens: completion, total_tokens: reply.usage.prompt_tokens + completion } };
  };
  const chunks: ChatCompletionChunk[] = [];
  for (let i = 0; i < positions; i += 1) {
    chunks.push({
      ...base,
      system_fingerprint: 'fp_mock',
      choices: reply.choices.map((choice, index) => {
        const content = choice.pieces[i] ?? '';
        return { index, delta: i === 0 ? { role: 'assistant' as const, content } : { content }, logprobs: null, finish_reason: null };
      }),
      ...usageAt(i + 1),
    });
  }
  chunks.push({
    ...base,
    system_fingerprint: 'fp_mock',
    choices: reply.choices.map((choice, index) => ({ index, delta: {}, logprobs: null, finish_reason: choice.finishReason })),
    ...usageAt(positions),
  });
  if (withUsage) chunks.push({ ...base, system_fingerprint: 'fp_mock', choices: [], usage: reply.usage });
  return chunks;
}
