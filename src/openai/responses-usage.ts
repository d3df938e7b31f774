/**
 * The one place where the Responses API's usage becomes the chat-completions usage shape
 * that billing reads (StreamTokenAccumulator, BillingStep): `input_tokens` is
 * `prompt_tokens`, `output_tokens` (reasoning included, as OpenAI bills it) is
 * `completion_tokens`, and the details keep their classes: `input_tokens_details.cached_tokens`
 * becomes `prompt_tokens_details.cached_tokens`, `output_tokens_details.reasoning_tokens`
 * becomes `completion_tokens_details.reasoning_tokens`. Whatever prices token classes
 * downstream therefore sees a Responses request exactly as it sees a chat completion.
 */
import type { ChatCompletionUsage } from './chat-response';

function count(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : undefined;
}

function detail(details: unknown, name: string): number | undefined {
  return typeof details === 'object' && details !== null ? count((details as Record<string, unknown>)[name]) : undefined;
}

/**
 * A Responses usage object (`response.usage`, as in `response.completed`) in the
 * chat-completions shape; undefined when absent or malformed (billing then counts the
 * delivered text itself, M6.3, rather than trusting it).
 */
export function responsesUsageAsChatUsage(usage: unknown): ChatCompletionUsage | undefined {
  if (typeof usage !== 'object' || usage === null) return undefined;
  const raw = usage as Record<string, unknown>;
  const input = count(raw.input_tokens);
  const output = count(raw.output_tokens);
  if (input === undefined || output === undefined) return undefined;
  const cached = detail(raw.input_tokens_details, 'cached_tokens');
  const reasoning = detail(raw.output_tokens_details, 'reasoning_tokens');
  return {
    prompt_tokens: input,
    completion_tokens: output,
    total_tokens: input + output,
    ...(cached !== undefined ? { prompt_tokens_details: { cached_tokens: cached } } : {}),
    ...(reasoning !== undefined ? { completion_tokens_details: { reasoning_tokens: reasoning } } : {}),
  };
}
