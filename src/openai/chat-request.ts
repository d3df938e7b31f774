/**
 * The OpenAI chat-completions request: one zod schema set for every edge that
 * receives one (the gateway's `POST /v1/chat/completions`, the mock upstream).
 *
 * Only the fields billing depends on are validated, strictly enough that
 * admission can count and price them (text parts carry string text, every turn
 * but an assistant's carries content, output caps are positive safe integers);
 * `n`, `tools`, `functions`, `tool_choice` and `response_format` are checked for their
 * shape (they change the worst case the reservation covers, issue 11); every other OpenAI
 * field (temperature, ...) passes through untouched, because the upstream must receive
 * what the client sent. A parse failure is a
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

/** OpenAI's limit on `n`; each choice may run to the output cap, so the reservation multiplies by it. */
export const MAX_CHOICES = 128;
/** OpenAI's limit on the number of tools (and of deprecated `functions`) of one request. */
export const MAX_TOOLS = 128;

/** A function definition, in `tools[].function` or the deprecated `functions[]`. */
const functionDefinitionSchema = z
  .object({
    name: z.string().min(1).max(64),
    description: z.string().optional(),
    parameters: z.record(z.unknown()).optional(),
    strict: z.boolean().nullable().optional(),
  })
  .passthrough();

/** A tool: a `function` tool needs its definition; other kinds (custom, built-in) pass through. */
const toolSchema = z
  .object({ type: z.string().min(1), function: functionDefinitionSchema.optional() })
  .passthrough()
  .superRefine((tool, ctx) => {
    if (tool.type === 'function' && tool.function === undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['function'], message: 'a function tool needs its function definition' });
    }
  });

/** `response_format`: text, a JSON object, or a JSON schema (whose schema counts in the prompt). */
const responseFormatSchema = z
  .object({
    type: z.enum(['text', 'json_object', 'json_schema']),
    json_schema: z
      .object({ name: z.string().min(1).max(64), description: z.string().optional(), schema: z.record(z.unknown()).optional(), strict: z.boolean().nullable().optional() })
      .passthrough()
      .optional(),
  })
  .passthrough()
  .superRefine((format, ctx) => {
    if (format.type === 'json_schema' && format.json_schema === undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['json_schema'], message: 'a json_schema response format needs its json_schema' });
    }
  });

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
    // Issue 11: what changes the worst case is validated, so the estimate can count it.
    n: z.number().int().min(1).max(MAX_CHOICES).nullable().optional(),
    tools: z.array(toolSchema).max(MAX_TOOLS).nullable().optional(),
    functions: z.array(functionDefinitionSchema).max(MAX_TOOLS).nullable().optional(),
    tool_choice: z.union([z.enum(['none', 'auto', 'required']), z.object({ type: z.string().min(1) }).passthrough()]).nullable().optional(),
    response_format: responseFormatSchema.nullable().optional(),
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

/** How many choices the request asks for (`n`, default 1). */
export function requestedChoices(request: Pick<ChatCompletionRequest, 'n'>): number {
  return request.n ?? 1;
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
