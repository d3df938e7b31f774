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
import { MAX_LIMIT, type RateLimits } from '../edge/limits';
import {
  MAX_ALERT_THRESHOLD_PERCENT,
  MAX_ALERT_THRESHOLDS,
  MIN_ALERT_THRESHOLD_PERCENT,
  type AlertSettings,
} from '../alerts/alert-settings';
import { nonNegativeSafeInt, positiveSafeInt } from '../safe-int';
import { budgetWindowFields, checkBudgetWindowFields } from './budget-window-schemas';
import { CONVERSATION_ID_PATTERN } from '../services/billed-requests';

/** Tenant ids appear in Redis hash tags and URLs: keep them to a safe alphabet. */
export const tenantIdSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1-64 characters of A-Z, a-z, 0-9, _ or -');

/** The `:id` path segment of the tenant routes. */
export const tenantParamsSchema = z.object({ id: tenantIdSchema });

/** `:id` of /admin/api-keys/:id (key ids are generated, but any id asked for is looked up, never trusted). */
export const apiKeyParamsSchema = z.object({ id: z.string().min(1).max(200) });

/** A rate limit: a positive JSON integer up to its maximum, or null (unlimited). */
const limitSchema = (max: number) => positiveSafeInt.max(max).nullable().optional();

/** `rpm_limit`, `tpm_limit`, `max_parallel_requests` of a tenant or a key (create and PATCH). */
const rateLimitFields = {
  rpm_limit: limitSchema(MAX_LIMIT.rpm),
  tpm_limit: limitSchema(MAX_LIMIT.tpm),
  max_parallel_requests: limitSchema(MAX_LIMIT.maxParallel),
};

/** The limits a body sets, in the domain's names; absent fields stay absent (a PATCH leaves them as they are). */
export function rateLimitsOf(body: { rpm_limit?: number | null; tpm_limit?: number | null; max_parallel_requests?: number | null }): Partial<RateLimits> {
  const limits: Partial<RateLimits> = {};
  if (body.rpm_limit !== undefined) limits.rpm = body.rpm_limit;
  if (body.tpm_limit !== undefined) limits.tpm = body.tpm_limit;
  if (body.max_parallel_requests !== undefined) limits.maxParallel = body.max_parallel_requests;
  return limits;
}

/** The limit fields of a tenant or key view (null = unlimited). */
export interface RateLimitView {
  rpm_limit: number | null;
  tpm_limit: number | null;
  max_parallel_requests: number | null;
}

export function toRateLimitView(limits: RateLimits): RateLimitView {
  return { rpm_limit: limits.rpm, tpm_limit: limits.tpm, max_parallel_requests: limits.maxParallel };
}

/** Longest webhook URL accepted. */
const MAX_WEBHOOK_URL_LENGTH = 2048;

/**
 * An http(s) URL without credentials: a password in the URL would be returned by every
 * GET, and webhooks authenticate the sender by the signature instead.
 */
function isWebhookUrl(value: string): boolean {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  return (url.protocol === 'http:' || url.protocol === 'https:') && url.username === '' && url.password === '' && url.hostname !== '';
}

const webhookUrlSchema = z
  .string()
  .max(MAX_WEBHOOK_URL_LENGTH)
  .refine(isWebhookUrl, 'must be an http:// or https:// URL without user name or password');

const thresholdsSchema = z
  .array(z.number().int('must be whole percents').min(MIN_ALERT_THRESHOLD_PERCENT).max(MAX_ALERT_THRESHOLD_PERCENT))
  .min(1)
  .max(MAX_ALERT_THRESHOLDS)
  .refine((list) => list.every((t, i) => i === 0 || t > list[i - 1]!), 'must be in increasing order without duplicates');

/** `alert_webhook_url` (null: none; a key then alerts to its tenant's) and `alert_thresholds_percent` of a tenant or a key. */
const alertFields = {
  alert_webhook_url: webhookUrlSchema.nullable().optional(),
  alert_thresholds_percent: thresholdsSchema.optional(),
};

/** The alert settings a body sets, in the domain's names; absent fields stay absent. */
export function alertSettingsOf(body: { alert_webhook_url?: string | null; alert_thresholds_percent?: number[] }): Partial<AlertSettings> {
  const settings: Partial<AlertSettings> = {};
  if (body.alert_webhook_url !== undefined) settings.webhookUrl = body.alert_webhook_url;
  if (body.alert_thresholds_percent !== undefined) settings.thresholdsPercent = body.alert_thresholds_percent;
  return settings;
}

/** The alert fields of a tenant or key view. */
export interface AlertSettingsView {
  alert_webhook_url: string | null;
  alert_thresholds_percent: number[];
}

export function toAlertSettingsView(settings: AlertSettings): AlertSettingsView {
  return { alert_webhook_url: settings.webhookUrl, alert_thresholds_percent: [...settings.thresholdsPercent] };
}

/** `PATCH /admin/tenants/:id` and `PATCH /admin/api-keys/:id`: at least one limit or alert setting; null clears a limit or the URL. */
export const patchLimitsBodySchema = z
  .object({ ...rateLimitFields, ...alertFields, ...budgetWindowFields })
  .strict()
  .refine((body) => Object.keys(body).length > 0, {
    message: 'give at least one of rpm_limit, tpm_limit, max_parallel_requests, alert_webhook_url, alert_thresholds_percent, budget_period, budget_windows, budget_timezone',
  })
  .superRefine(checkBudgetWindowFields);

/** `POST /admin/tenants` */
export const createTenantBodySchema = z
  .object({
    id: tenantIdSchema,
    name: z.string().min(1).max(200),
    quota_limit_micros: nonNegativeSafeInt,
    ...rateLimitFields,
    ...alertFields,
    ...budgetWindowFields,
  })
  .strict()
  .superRefine(checkBudgetWindowFields);
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
    ...rateLimitFields,
    ...alertFields,
    ...budgetWindowFields,
  })
  .strict()
  .superRefine(checkBudgetWindowFields);
export type CreateApiKeyBody = z.infer<typeof createApiKeyBodySchema>;

/** `PUT /admin/models/:model` */
export const modelPriceBodySchema = z
  .object({
    input_price_micros_per_mtok: nonNegativeSafeInt,
    /** Issue 11: the price of a cached prompt token; absent = the input price. */
    cached_input_price_micros_per_mtok: nonNegativeSafeInt.optional(),
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

/** A report bound: a UTC date (`2026-12-01`, its midnight) or an ISO 8601 date-time with its offset. */
const reportInstant = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2}))?$/, 'must be a date (YYYY-MM-DD) or an ISO 8601 date-time with its offset')
  .transform((v, ctx) => {
    const date = new Date(v.length === 10 ? `${v}T00:00:00Z` : v);
    if (Number.isNaN(date.getTime()) || (v.length === 10 && date.toISOString().slice(0, 10) !== v)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'is not a real date' });
      return z.NEVER;
    }
    return date;
  });

/** The longest report range: a year and a day of daily rows at most. */
export const MAX_REPORT_DAYS = 366;
const DAY_MS = 24 * 3600 * 1000;

function startOfUtcMonth(now: Date): Date {
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
}

/**
 * `GET /admin/tenants/:id/usage?from=&to=&group_by=` (and per key): `from` inclusive (default the
 * start of the current UTC month), `to` exclusive (default now), `group_by` day | model | api_key.
 */
export const usageQuerySchema = z
  .object({
    from: reportInstant.optional(),
    to: reportInstant.optional(),
    group_by: z.enum(['day', 'model', 'api_key']).default('day'),
  })
  .strict()
  .transform((q) => {
    const to = q.to ?? new Date();
    return { from: q.from ?? startOfUtcMonth(to), to, groupBy: q.group_by };
  })
  .refine((q) => q.from < q.to, { message: 'from must be before to', path: ['from'] })
  .refine((q) => q.to.getTime() - q.from.getTime() <= MAX_REPORT_DAYS * DAY_MS, { message: `the range must not exceed ${MAX_REPORT_DAYS} days`, path: ['to'] });

/** The longest range OpenAI's legacy usage endpoint accepted. */
export const MAX_DASHBOARD_USAGE_DAYS = 100;
const isoDate = z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a date YYYY-MM-DD').pipe(reportInstant);

/** `GET /v1/dashboard/billing/usage?start_date=YYYY-MM-DD&end_date=YYYY-MM-DD` (end exclusive, as OpenAI's). */
export const dashboardUsageQuerySchema = z
  .object({ start_date: isoDate, end_date: isoDate })
  .refine((q) => q.start_date < q.end_date, { message: 'start_date must be before end_date', path: ['start_date'] })
  .refine((q) => q.end_date.getTime() - q.start_date.getTime() <= MAX_DASHBOARD_USAGE_DAYS * DAY_MS, {
    message: `the range must not exceed ${MAX_DASHBOARD_USAGE_DAYS} days`,
    path: ['end_date'],
  });

/** A conversation id (`X-Conversation-Id`, `/admin/locks/:conversation_id`): 1-128 of A-Z a-z 0-9 _ . : - (no braces: it becomes a Redis hash tag). */
export const conversationIdSchema = z.string().regex(CONVERSATION_ID_PATTERN, 'must be 1-128 characters of A-Z, a-z, 0-9, _ . : or -');
