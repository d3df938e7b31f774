/**
 * zod schemas for every HTTP body and query at the edge. A parse failure throws
 * a ZodError that `errorMiddleware` renders as a 400 naming the first bad field.
 *
 * Money fields are strict: JSON numbers only (a string "10" is rejected, not
 * coerced), integers only (a float is never rounded into a charge), within
 * Number.MAX_SAFE_INTEGER so they survive the trip to BIGINT and Lua exactly.
 * Admin bodies reject unknown keys so a typo ("quota_limit") is a 400, not a
 * silently ignored field.
 */
import { z } from 'zod';

/** A JSON integer in 0..MAX_SAFE_INTEGER (amounts in micros, prices). */
export const nonNegativeSafeInt = z.number().int().nonnegative().safe();
/** A JSON integer in 1..MAX_SAFE_INTEGER. */
export const positiveSafeInt = z.number().int().positive().safe();

export const MessageRole = {
  system: 'system',
  developer: 'developer',
  user: 'user',
  assistant: 'assistant',
  tool: 'tool',
} as const;
export type MessageRole = (typeof MessageRole)[keyof typeof MessageRole];

const roleSchema = z.enum([MessageRole.system, MessageRole.developer, MessageRole.user, MessageRole.assistant, MessageRole.tool]);

/** A content part: text parts need their text; other kinds (image_url, input_audio, file) pass through. */
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
    role: roleSchema,
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

/**
 * `POST /v1/chat/completions`. Fields we bill on are validated; every other
 * OpenAI field (temperature, tools, n, ...) passes through to the upstream.
 */
export const chatCompletionRequestSchema = z
  .object({
    model: z.string().min(1),
    messages: z.array(chatMessageSchema).min(1),
    stream: z.boolean().optional(),
    stream_options: z.object({ include_usage: z.boolean().optional() }).passthrough().nullable().optional(),
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

/** Tenant ids appear in Redis hash tags and URLs: keep them to a safe alphabet. */
export const tenantIdSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1-64 characters of A-Z, a-z, 0-9, _ or -');

/** `POST /admin/tenants` */
export const createTenantBodySchema = z
  .object({
    id: tenantIdSchema,
    name: z.string().min(1).max(200),
    quota_limit_micros: nonNegativeSafeInt,
  })
  .strict();
export type CreateTenantBody = z.infer<typeof createTenantBodySchema>;

/** `POST /admin/tenants/:id/topups` (idempotent on `reference`). */
export const topUpBodySchema = z
  .object({
    amount_micros: positiveSafeInt,
    reference: z.string().min(1).max(200),
  })
  .strict();
export type TopUpBody = z.infer<typeof topUpBodySchema>;

/** `POST /admin/tenants/:id/api-keys`; a null or absent budget means "no key budget". */
export const createApiKeyBodySchema = z
  .object({
    name: z.string().min(1).max(200),
    budget_micros: nonNegativeSafeInt.nullable().optional(),
  })
  .strict();
export type CreateApiKeyBody = z.infer<typeof createApiKeyBodySchema>;

/** `PUT /admin/models/:model` */
export const modelPriceBodySchema = z
  .object({
    input_price_micros_per_mtok: nonNegativeSafeInt,
    output_price_micros_per_mtok: nonNegativeSafeInt,
    max_output_tokens: positiveSafeInt,
  })
  .strict();
export type ModelPriceBody = z.infer<typeof modelPriceBodySchema>;

/** Model names in the `:model` path segment. */
export const modelNameSchema = z.string().min(1).max(200);

/**
 * `GET /admin/tenants/:id/transactions?limit=&cursor=`. Query values are
 * strings, so `limit` is parsed from decimal digits only ("1e2", " 5", "5.0" are rejected).
 */
export const transactionsQuerySchema = z.object({
  limit: z
    .string()
    .regex(/^[0-9]{1,3}$/, 'must be an integer from 1 to 500')
    .transform(Number)
    .pipe(z.number().int().min(1).max(500))
    .default('50'),
  cursor: z.string().min(1).max(500).optional(),
});
export type TransactionsQuery = z.infer<typeof transactionsQuerySchema>;
