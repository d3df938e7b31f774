/**
 * zod schemas for the admin HTTP bodies and queries. A parse failure throws a
 * ZodError that `errorMiddleware` renders as a 400 naming the first bad field.
 * The OpenAI request (`POST /v1/chat/completions`) has its schema with the rest
 * of the wire format, in src/openai/chat-request.ts.
 *
 * Money fields are strict (src/safe-int.ts): JSON numbers only, integers only,
 * within Number.MAX_SAFE_INTEGER. Admin bodies reject unknown keys so a typo
 * ("quota_limit") is a 400, not a silently ignored field.
 */
import { z } from 'zod';
import { nonNegativeSafeInt, positiveSafeInt } from '../safe-int';

/** Tenant ids appear in Redis hash tags and URLs: keep them to a safe alphabet. */
export const tenantIdSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1-64 characters of A-Z, a-z, 0-9, _ or -');

/** The `:id` path segment of the tenant routes. */
export const tenantParamsSchema = z.object({ id: tenantIdSchema });

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
