/**
 * Token classes (issue 11): the kinds of token a provider prices or reports apart, read from
 * one usage object in the chat-completions shape:
 *
 *   { prompt_tokens, completion_tokens,
 *     prompt_tokens_details?:     { cached_tokens?, audio_tokens? },
 *     completion_tokens_details?: { reasoning_tokens?, audio_tokens? } }
 *
 * This is the ONE place that reads those details. The non-streamed path, the stream
 * accumulator (the final usage chunk's details win, ./stream-token-accumulator.ts) and the
 * relay recovery all go through it; other APIs (the Responses API's `input_tokens_details`)
 * are mapped into this shape before they reach billing.
 *
 * Billing: cached prompt tokens are priced at the model's cached-input price; reasoning
 * tokens are part of `completion_tokens` and billed as output (as providers do), audio tokens
 * are part of the prompt and completion counts; both are recorded in the ledger, not priced apart.
 *
 * A detail that is missing, malformed or larger than the count it belongs to is treated as not
 * reported (0): billing a cached token at the full input price is the safe mistake, never
 * billing a prompt below what it cost. A usage whose two counts are not non-negative safe
 * integers is no usage at all (null), as before.
 */
import type { TokenUsage } from './pricing';

/** The classes of one request's tokens; every count is a non-negative safe integer. */
export interface TokenClasses extends TokenUsage {
  /** Of the prompt, tokens served from the provider's prompt cache. */
  cachedPromptTokens: number;
  /** Of the completion, reasoning tokens (billed as output). */
  reasoningTokens: number;
  /** Of the prompt, audio input tokens. */
  audioPromptTokens: number;
  /** Of the completion, audio output tokens. */
  audioCompletionTokens: number;
}

/** The usage object as an upstream sends it; every field is checked before use. */
export interface ChatUsageLike {
  prompt_tokens?: unknown;
  completion_tokens?: unknown;
  prompt_tokens_details?: unknown;
  completion_tokens_details?: unknown;
}

/** The same classes in the chat-completions wire shape (what the gateway sends its clients). */
export interface ChatUsageWire {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens: number; audio_tokens: number };
  completion_tokens_details?: { reasoning_tokens: number; audio_tokens: number };
}

export function isTokenCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** `details[field]` when it is a count no larger than `bound`, else 0 (see the module comment). */
function detail(details: unknown, field: string, bound: number): number {
  if (typeof details !== 'object' || details === null) return 0;
  const value = (details as Record<string, unknown>)[field];
  return isTokenCount(value) && value <= bound ? value : 0;
}

/**
 * The token classes of a chat-completions usage object, or null when it carries no valid
 * prompt and completion counts. A class the usage does not report is 0.
 */
export function usageTokenClasses(usage: ChatUsageLike | null | undefined): TokenClasses | null {
  if (!usage || !isTokenCount(usage.prompt_tokens) || !isTokenCount(usage.completion_tokens)) return null;
  const promptTokens = usage.prompt_tokens;
  const completionTokens = usage.completion_tokens;
  return {
    promptTokens,
    completionTokens,
    cachedPromptTokens: detail(usage.prompt_tokens_details, 'cached_tokens', promptTokens),
    audioPromptTokens: detail(usage.prompt_tokens_details, 'audio_tokens', promptTokens),
    reasoningTokens: detail(usage.completion_tokens_details, 'reasoning_tokens', completionTokens),
    audioCompletionTokens: detail(usage.completion_tokens_details, 'audio_tokens', completionTokens),
  };
}

/** Classes for a usage known only by its two counts (tiktoken, the estimate): nothing cached, no reasoning. */
export function plainTokenClasses(usage: TokenUsage): TokenClasses {
  return {
    promptTokens: usage.promptTokens,
    completionTokens: usage.completionTokens,
    cachedPromptTokens: 0,
    reasoningTokens: 0,
    audioPromptTokens: 0,
    audioCompletionTokens: 0,
  };
}

/**
 * The chat-completions usage the gateway answers with: the billed counts, plus the details
 * when any class is non-zero (a client that reads `cached_tokens` sees what it was billed for).
 */
export function toChatUsage(classes: Partial<TokenClasses> & TokenUsage): ChatUsageWire {
  const wire: ChatUsageWire = {
    prompt_tokens: classes.promptTokens,
    completion_tokens: classes.completionTokens,
    total_tokens: classes.promptTokens + classes.completionTokens,
  };
  const cached = classes.cachedPromptTokens ?? 0;
  const audioIn = classes.audioPromptTokens ?? 0;
  const reasoning = classes.reasoningTokens ?? 0;
  const audioOut = classes.audioCompletionTokens ?? 0;
  if (cached > 0 || audioIn > 0) wire.prompt_tokens_details = { cached_tokens: cached, audio_tokens: audioIn };
  if (reasoning > 0 || audioOut > 0) wire.completion_tokens_details = { reasoning_tokens: reasoning, audio_tokens: audioOut };
  return wire;
}
