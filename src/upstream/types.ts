/**
 * OpenAI chat-completions wire types: the one shape every upstream adapter
 * speaks towards the billing pipeline, whatever the provider speaks on its side.
 *
 * Requests are input at an edge (the gateway front, the mock), so they are a zod
 * schema that passes unknown fields through untouched (temperature, tools, ...):
 * we must forward what the client sent, but only the fields named here affect
 * billing. Responses are output we build or parse leniently, so plain interfaces.
 */
import { z } from 'zod';

/** Why the model stopped; `length` means the output cap was hit. */
export const FinishReason = {
  Stop: 'stop',
  Length: 'length',
  ToolCalls: 'tool_calls',
  ContentFilter: 'content_filter',
  FunctionCall: 'function_call',
} as const;
export type FinishReason = (typeof FinishReason)[keyof typeof FinishReason];

export const MessageRole = {
  System: 'system',
  Developer: 'developer',
  User: 'user',
  Assistant: 'assistant',
  Tool: 'tool',
  Function: 'function',
} as const;
export type MessageRole = (typeof MessageRole)[keyof typeof MessageRole];

const roleValues = Object.values(MessageRole) as [MessageRole, ...MessageRole[]];

/** A content part; only `text` parts carry tokens we can count, the others pass through. */
export const contentPartSchema = z
  .object({ type: z.string().min(1), text: z.string().optional() })
  .passthrough();
export type ContentPart = z.infer<typeof contentPartSchema>;

export const chatMessageSchema = z
  .object({
    role: z.enum(roleValues),
    // null/absent is legal for assistant messages that only carry tool_calls.
    content: z.union([z.string(), z.array(contentPartSchema), z.null()]).optional(),
    name: z.string().optional(),
  })
  .passthrough();
export type ChatMessage = z.infer<typeof chatMessageSchema>;

const positiveIntOrNull = z.number().int().positive().nullable().optional();

export const chatCompletionRequestSchema = z
  .object({
    model: z.string().min(1),
    messages: z.array(chatMessageSchema).min(1),
    stream: z.boolean().nullable().optional(),
    stream_options: z
      .object({ include_usage: z.boolean().optional() })
      .passthrough()
      .nullable()
      .optional(),
    // Both caps exist in the wild: `max_tokens` (legacy) and `max_completion_tokens`.
    max_tokens: positiveIntOrNull,
    max_completion_tokens: positiveIntOrNull,
    temperature: z.number().min(0).max(2).nullable().optional(),
    top_p: z.number().min(0).max(1).nullable().optional(),
    n: z.number().int().positive().nullable().optional(),
    user: z.string().optional(),
  })
  .passthrough();
export type ChatCompletionRequest = z.infer<typeof chatCompletionRequestSchema>;

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

/** Per-call options; `signal` aborts the HTTP request itself, not just our wait for it. */
export interface UpstreamCallOptions {
  signal?: AbortSignal;
  /** Extra request headers for this call (they win over the provider's own). */
  headers?: Record<string, string>;
}

/**
 * One upstream LLM provider. Adapters translate to and from the provider's own
 * protocol and normalise usage to {@link ChatCompletionUsage}, so the billing
 * steps never see provider-specific shapes.
 */
export interface UpstreamProvider {
  /** A non-streamed completion; `stream` in the request is ignored. */
  complete(req: ChatCompletionRequest, opts?: UpstreamCallOptions): Promise<ChatCompletion>;
  /**
   * A streamed completion. The HTTP request starts on the first `next()`;
   * stopping the iteration early (break/return) releases the connection.
   */
  stream(req: ChatCompletionRequest, opts?: UpstreamCallOptions): AsyncIterable<ChatCompletionChunk>;
}
