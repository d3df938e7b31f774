/**
 * The OpenAI chat-completions responses: the one shape every upstream adapter
 * hands to the billing pipeline, whatever the provider speaks on its side, and
 * the shape the mock upstream answers in.
 *
 * Responses are output we build, or parse leniently in ./wire, so they are
 * plain interfaces rather than schemas.
 */
import type { MessageRole } from './chat-request';

/** Why the model stopped; `length` means the output cap was hit. */
export const FinishReason = {
  stop: 'stop',
  length: 'length',
  toolCalls: 'tool_calls',
  contentFilter: 'content_filter',
  functionCall: 'function_call',
} as const;
export type FinishReason = (typeof FinishReason)[keyof typeof FinishReason];

/** Token usage, always in OpenAI's shape once it left an adapter. */
export interface ChatCompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens?: number } & Record<string, unknown>;
  completion_tokens_details?: { reasoning_tokens?: number } & Record<string, unknown>;
}

export interface AssistantMessage {
  role: 'assistant';
  content: string | null;
  refusal?: string | null;
  tool_calls?: unknown[];
}

export interface ChatCompletionChoice {
  index: number;
  message: AssistantMessage;
  finish_reason: FinishReason | null;
  logprobs?: unknown;
}

/** A non-streamed answer (`object: "chat.completion"`). */
export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: ChatCompletionChoice[];
  /** Absent when the upstream did not report usage; billing then falls back (M6.3). */
  usage?: ChatCompletionUsage;
  system_fingerprint?: string | null;
}

export interface ChatCompletionDelta {
  role?: MessageRole;
  content?: string | null;
  refusal?: string | null;
  tool_calls?: unknown[];
}

export interface ChatCompletionChunkChoice {
  index: number;
  delta: ChatCompletionDelta;
  finish_reason: FinishReason | null;
  logprobs?: unknown;
}

/**
 * One streamed event (`object: "chat.completion.chunk"`). With
 * `stream_options.include_usage` the last chunk before `[DONE]` has `choices: []`
 * and the usage; the chunks before it carry `usage: null`.
 */
export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: ChatCompletionChunkChoice[];
  usage?: ChatCompletionUsage | null;
  system_fingerprint?: string | null;
}

/** The body of every OpenAI error response. */
export interface OpenAIErrorBody {
  error: {
    message: string;
    type: string;
    code: string | null;
    param?: string | null;
  };
}
