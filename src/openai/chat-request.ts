/**
 * The OpenAI chat-completions request: one zod schema set for every edge that
 * receives one (the gateway's `POST /v1/chat/completions`, the mock upstream).
 *
 * Only the fields billing depends on are validated, strictly enough that
 * admission can count and price them (text parts carry string text, every turn
 * but an assistant's carries content, output caps are positive safe integers);
 * every other OpenAI field (temperature, tools, n, ...) passes through untouched,
 * because the upstream must receive what the client sent. A parse failure is a
 * ZodError naming the first bad field: the gateway renders it as a 400, the mock
 * as its own 400.
 */
import { z } from 'zod';
import { positiveSafeInt } from '../safe-int';

/** The roles a chat message may have (the deprecated `function` role is refused). */
export const MessageRole = {
  system: 'system',
  developer: 'developer',
  user: 'user',
  assistant: 'assistant',
  tool: 'tool',
} as const;
export type MessageRole = (typeof MessageRole)[keyof typeof MessageRole];

/** One of {@link MessageRole}; zod's "expected ..." message lists them in the order above. */
export const messageRoleSchema = z.enum(Object.values(MessageRole) as [MessageRole, ...MessageRole[]]);

/**
 * A content part: text parts need their text; other kinds (image_url,
 * input_audio, file, refusal) pass through. What text a part carries is decided
 * in ./message-text.
 */
const contentPartSchema = z
  .object({ type: z.string().min(1), text: z.unknown().optional() })
  .passthrough()
  .superRefine((part, ctx) => {
    if (part.type === 'text' && typeof part.text !== 'string') {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['text'], message: 'a text part needs a string text' });
    }
  });

export const chatMessageSchema = z
  .object({
    role: messageRoleSchema,
    content: z.union([z.string(), z.array(contentPartSchema).min(1), z.null()]).optional(),
    name: z.string().min(1).optional(),
  })
  .passthrough()
  .superRefine((message, ctx) => {
    // Only an assistant turn (e.g. one carrying tool_calls) may come without content.
    if (message.role !== MessageRole.assistant && (message.content === undefined || message.content === null)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['content'], message: `a ${message.role} message needs content` });
    }
  });
export type ChatMessage = z.infer<typeof chatMessageSchema>;

/** `POST /v1/chat/completions`. */
export const chatCompletionRequestSchema = z
  .object({
    model: z.string().min(1),
    messages: z.array(chatMessageSchema).min(1),
    stream: z.boolean().optional(),
    stream_options: z.object({ include_usage: z.boolean().optional() }).passthrough().nullable().optional(),
    // Both caps exist in the wild: `max_tokens` (deprecated) and `max_completion_tokens`.
    max_tokens: positiveSafeInt.nullable().optional(),
    max_completion_tokens: positiveSafeInt.nullable().optional(),
  })
  .passthrough();
export type ChatCompletionRequest = z.infer<typeof chatCompletionRequestSchema>;

/**
 * The output cap the caller asked for: `max_completion_tokens` (current name)
 * wins over the deprecated `max_tokens`; undefined when neither is set.
 */
export function requestedMaxTokens(request: Pick<ChatCompletionRequest, 'max_tokens' | 'max_completion_tokens'>): number | undefined {
  return request.max_completion_tokens ?? request.max_tokens ?? undefined;
}

/**
 * The body sent upstream for a client's request: our output cap (the reservation covers
 * it) replaces the client's, stream options are ours. The upstream call step builds it
 * from the stored request body (src/activities/upstream-call-step.ts).
 */
export function upstreamBody(req: ChatCompletionRequest, maxOutputTokens: number): Record<string, unknown> {
  const { stream: _stream, stream_options: _options, max_completion_tokens, max_tokens: _max, ...rest } = req;
  return max_completion_tokens !== undefined
    ? { ...rest, max_completion_tokens: maxOutputTokens }
    : { ...rest, max_tokens: maxOutputTokens };
}
