/**
 * The budget window fields of tenants and API keys (issue 12, docs/budget-windows.md), on
 * POST and PATCH, and their view on every tenant and key answer.
 *
 * Two forms, never both in one body:
 *   - the contract's single-window form: `budget_period` (`none`, `daily`, `weekly`,
 *     `monthly`) with `budget_limit_micros`, the cap per window (`none` clears every window);
 *   - several windows at once: `budget_windows: [{period, limit_micros}]`, one per period
 *     (e.g. a daily AND a monthly cap, each enforced); null or [] clears them.
 * `budget_timezone` (IANA name, default UTC) aligns every window of the subject.
 * A subject's lifetime quota or budget (`quota_limit_micros`, `budget_micros`) is separate
 * and still enforced: the windows cap the spend per calendar period on top of it.
 */
import { z } from 'zod';
import { BUDGET_PERIODS, canonicalTimeZone, InvalidTimeZoneError, type BudgetPeriod } from '../billing/budget-window-period';
import type { BudgetWindowCap } from '../db/budget-window-repository';
import type { WindowUsage } from '../services/budget-windows';
import { nonNegativeSafeInt } from '../safe-int';

const periodSchema = z.enum(BUDGET_PERIODS);

const timeZoneSchema = z.string().transform((zone, ctx) => {
  try {
    return canonicalTimeZone(zone);
  } catch (err) {
    if (!(err instanceof InvalidTimeZoneError)) throw err;
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must be an IANA time zone name such as "UTC" or "Europe/Berlin"' });
    return z.NEVER;
  }
});

const windowsSchema = z
  .array(z.object({ period: periodSchema, limit_micros: nonNegativeSafeInt }).strict())
  .max(BUDGET_PERIODS.length)
  .refine((list) => new Set(list.map((w) => w.period)).size === list.length, 'must name each period at most once');

export const budgetWindowFields = {
  budget_period: z.enum(['none', ...BUDGET_PERIODS]).optional(),
  budget_limit_micros: nonNegativeSafeInt.optional(),
  budget_windows: windowsSchema.nullable().optional(),
  budget_timezone: timeZoneSchema.optional(),
};

interface BudgetWindowBody {
  budget_period?: 'none' | BudgetPeriod;
  budget_limit_micros?: number;
  budget_windows?: Array<{ period: BudgetPeriod; limit_micros: number }> | null;
  budget_timezone?: string;
}

/** The rules across the fields (a superRefine of each body schema). */
export function checkBudgetWindowFields(body: BudgetWindowBody, ctx: z.RefinementCtx): void {
  const issue = (path: string, message: string): void => ctx.addIssue({ code: z.ZodIssueCode.custom, path: [path], message });
  if (body.budget_windows !== undefined && (body.budget_period !== undefined || body.budget_limit_micros !== undefined)) {
    issue('budget_windows', 'give either budget_windows or budget_period with budget_limit_micros, not both');
  } else if (body.budget_period !== undefined && body.budget_period !== 'none' && body.budget_limit_micros === undefined) {
    issue('budget_limit_micros', `is required with budget_period "${body.budget_period}"`);
  } else if (body.budget_limit_micros !== undefined && (body.budget_period === undefined || body.budget_period === 'none')) {
    issue('budget_limit_micros', 'needs budget_period daily, weekly or monthly');
  }
}

/** What a body changes of a subject's windows: caps (undefined = keep) and the zone (undefined = keep); undefined when it names none. */
export interface BudgetWindowPatch {
  caps?: BudgetWindowCap[];
  timeZone?: string;
}

export function budgetWindowPatchOf(body: BudgetWindowBody): BudgetWindowPatch | undefined {
  let caps: BudgetWindowCap[] | undefined;
  if (body.budget_windows !== undefined) caps = (body.budget_windows ?? []).map((w) => ({ period: w.period, limitMicros: w.limit_micros }));
  else if (body.budget_period === 'none') caps = [];
  else if (body.budget_period !== undefined) caps = [{ period: body.budget_period, limitMicros: body.budget_limit_micros! }];
  if (caps === undefined && body.budget_timezone === undefined) return undefined;
  return { ...(caps === undefined ? {} : { caps }), ...(body.budget_timezone === undefined ? {} : { timeZone: body.budget_timezone }) };
}

/** The budget window fields of a tenant or key view: the current window of every cap, its spend (reservations included). */
export interface BudgetWindowView {
  /** The single-window form: the shortest window's period, 'none' without windows. */
  budget_period: 'none' | BudgetPeriod;
  budget_timezone: string;
  budget_windows: Array<{ period: BudgetPeriod; limit_micros: number; window_start: string; window_end: string; used_micros: number; remaining_micros: number }>;
}

export function toBudgetWindowView(usage: { timeZone: string; windows: WindowUsage[] }): BudgetWindowView {
  return {
    budget_period: usage.windows[0]?.period ?? 'none',
    budget_timezone: usage.timeZone,
    budget_windows: usage.windows.map((w) => ({
      period: w.period,
      limit_micros: w.limitMicros,
      window_start: new Date(w.startMs).toISOString(),
      window_end: new Date(w.endMs).toISOString(),
      used_micros: w.usedMicros,
      remaining_micros: Math.max(0, w.limitMicros - w.usedMicros),
    })),
  };
}
