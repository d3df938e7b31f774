/**
 * OpenAI's embeddings request (`POST /v1/embeddings`) as the gateway and the mock upstream
 * read it, and what it costs: input tokens only (an embedding has no output tokens).
 *
 * `input` is a string, an array of strings, an array of token ids, or an array of such
 * arrays, as OpenAI documents it; every other field (`dimensions`, `encoding_format`,
 * `user`, ...) passes through to the upstream untouched. The limits are OpenAI's own
 * (at most 2048 inputs per request, no empty input): a request the upstream would refuse
 * is refused here, before anything is reserved.
 */
import { z } from 'zod';
import { countTextTokens } from '../billing/token-count';
import { positiveSafeInt } from '../safe-int';

/** OpenAI's limit on the number of inputs of one embeddings request. */
export const MAX_EMBEDDING_INPUTS = 2048;

/** A token id: tiktoken's vocabularies are far below 2^31. */
const tokenId = z.number().int().nonnegative().max(2 ** 31 - 1);
const tokenArray = z.array(tokenId).min(1, 'a token array input must not be empty');
const text = z.string().min(1, 'input must not be an empty string');

export const embeddingsInputSchema = z.union([
  text,
  z.array(text).min(1, 'input must not be an empty array').max(MAX_EMBEDDING_INPUTS, `at most ${MAX_EMBEDDING_INPUTS} inputs per request`),
  tokenArray,
  z.array(tokenArray).min(1, 'input must not be an empty array').max(MAX_EMBEDDING_INPUTS, `at most ${MAX_EMBEDDING_INPUTS} inputs per request`),
]);
export type EmbeddingsInput = z.infer<typeof embeddingsInputSchema>;

/** `POST /v1/embeddings`. */
export const embeddingsRequestSchema = z
  .object({
    model: z.string().min(1),
    input: embeddingsInputSchema,
    dimensions: positiveSafeInt.optional(),
    encoding_format: z.enum(['float', 'base64']).optional(),
    user: z.string().optional(),
    // An embedding is one JSON answer: a client asking for a stream is told so, not ignored.
    stream: z.literal(false, { errorMap: () => ({ message: 'embeddings are not streamed' }) }).optional(),
  })
  .passthrough();
export type EmbeddingsRequest = z.infer<typeof embeddingsRequestSchema>;

/** The inputs one by one: each a text or a token array. */
export function embeddingInputs(input: EmbeddingsInput): Array<string | readonly number[]> {
  if (typeof input === 'string') return [input];
  if (input.length > 0 && typeof input[0] === 'number') return [input as number[]];
  return input as Array<string | number[]>;
}

/**
 * The input tokens of an embeddings request, which is its whole billed usage: tiktoken's
 * count of each text (the model's encoding), the length of each token array (those are
 * tokens already). Embeddings wrap no message format around the text, so nothing is added.
 */
export function countEmbeddingInputTokens(input: EmbeddingsInput, model: string): number {
  let tokens = 0;
  for (const one of embeddingInputs(input)) tokens += typeof one === 'string' ? countTextTokens(one, model) : one.length;
  return tokens;
}

/** OpenAI's embeddings usage: `prompt_tokens` and `total_tokens`, no completion side. */
export interface EmbeddingsUsage {
  prompt_tokens: number;
  total_tokens: number;
}

/**
 * An embeddings usage in the chat-completions shape the billing code reads
 * (StreamTokenAccumulator): its input tokens, 0 completion tokens. Undefined when the
 * upstream reported none (or a malformed one): the caller then bills its own count.
 */
export function embeddingsUsageAsChatUsage(usage: unknown): { prompt_tokens: number; completion_tokens: number; total_tokens: number } | undefined {
  if (typeof usage !== 'object' || usage === null) return undefined;
  const prompt = (usage as { prompt_tokens?: unknown }).prompt_tokens;
  if (typeof prompt !== 'number' || !Number.isSafeInteger(prompt) || prompt < 0) return undefined;
  return { prompt_tokens: prompt, completion_tokens: 0, total_tokens: prompt };
}
