/**
 * What the quota scripts answer, parsed into discriminated unions on `status`.
 * Each parser checks the reply against the shape the script header promises.
 */
import type { RemainingBalance } from '../billing/money';
import { QuotaScriptName } from './lua-source';


/** quota_check.lua's statuses, see the script header for each. */
export const ReserveStatus = {
  reserved: 'reserved',
  duplicate: 'duplicate',
  insufficientQuota: 'insufficient_quota',
  budgetExceeded: 'budget_exceeded',
  tenantMissing: 'tenant_missing',
  keyMissing: 'key_missing',
} as const;
export type ReserveStatus = (typeof ReserveStatus)[keyof typeof ReserveStatus];

/** quota_check.lua's answer: admitted (reserved now or before), denied, or a counter to warm up first. */
export type ReserveResult =
  | ({ status: 'reserved' | 'duplicate'; reservedMicros: number } & RemainingBalance)
  | ({ status: 'insufficient_quota' | 'budget_exceeded' } & RemainingBalance)
  | { status: 'tenant_missing' | 'key_missing' };

/** quota_deduct.lua's answer; deltaMicros is what settling to cost moved used by (or moved first, for a duplicate); remainingMicros = limit - used, negative after a settled overage. */
export type SettleTenantResult =
  | { status: 'applied'; deltaMicros: number; usedMicros: number; remainingMicros: number }
  | { status: 'duplicate'; deltaMicros: number }
  | { status: 'tenant_missing' };

/** apikey_budget_deduct.lua's answer; deltaMicros as for the tenant; remainingMicros is null for an unlimited key. */
export type SettleKeyResult =
  | { status: 'applied'; deltaMicros: number; spentMicros: number; remainingMicros: number | null }
  | { status: 'duplicate'; deltaMicros: number }
  | { status: 'key_missing' };

/** Thrown when a script's reply does not have the shape its header promises (a script/runner version mismatch). */
export class UnexpectedScriptReplyError extends Error {
  override name = 'UnexpectedScriptReplyError';

  constructor(script: QuotaScriptName, reply: unknown) {
    super(`${script} returned an unexpected reply: ${JSON.stringify(reply)}`);
  }
}

/** Splits a reply into its status and integer fields, checking the count and that each is a safe integer. */
function replyFields(name: QuotaScriptName, reply: unknown, counts: Record<string, number>): [string, ...number[]] {
  if (!Array.isArray(reply) || typeof reply[0] !== 'string') throw new UnexpectedScriptReplyError(name, reply);
  const [status, ...rest] = reply as [string, ...unknown[]];
  if (counts[status] !== rest.length || !rest.every((v) => Number.isSafeInteger(v))) {
    throw new UnexpectedScriptReplyError(name, reply);
  }
  return [status, ...(rest as number[])];
}

/** Parses quota_check.lua's reply (also for replies collected from a pipeline). */
export function parseReserveReply(reply: unknown): ReserveResult {
  const fieldCounts = Object.fromEntries(Object.values(ReserveStatus).map((status) => [status, 3]));
  const [status, reserved = 0, tenantLeft = 0, keyLeft = 0] = replyFields(QuotaScriptName.quotaCheck, reply, fieldCounts);
  const balance: RemainingBalance = { tenantRemainingMicros: tenantLeft, keyRemainingMicros: keyLeft < 0 ? null : keyLeft };
  switch (status) {
    case 'reserved':
    case 'duplicate':
      return { status, reservedMicros: reserved, ...balance };
    case 'insufficient_quota':
    case 'budget_exceeded':
      return { status, ...balance };
    default:
      return { status: status as 'tenant_missing' | 'key_missing' };
  }
}

export function parseSettleTenantReply(reply: unknown): SettleTenantResult {
  const [status, delta = 0, used = 0, left = 0] = replyFields(QuotaScriptName.quotaDeduct, reply, {
    applied: 3,
    duplicate: 1,
    tenant_missing: 0,
  });
  if (status === 'applied') return { status, deltaMicros: delta, usedMicros: used, remainingMicros: left };
  if (status === 'duplicate') return { status, deltaMicros: delta };
  return { status: 'tenant_missing' };
}

export function parseSettleKeyReply(reply: unknown): SettleKeyResult {
  const [status, delta = 0, spent = 0, budget = 0] = replyFields(QuotaScriptName.apiKeyBudgetDeduct, reply, {
    applied: 3,
    duplicate: 1,
    key_missing: 0,
  });
  if (status === 'applied') {
    return { status, deltaMicros: delta, spentMicros: spent, remainingMicros: budget < 0 ? null : budget - spent };
  }
  if (status === 'duplicate') return { status, deltaMicros: delta };
  return { status: 'key_missing' };
}

/** quota_release.lua's answer: the reservation given back, nothing to release, or left alone. */
export type ReleaseResult = { status: 'released' | 'absent' | 'kept'; releasedMicros: number };

export function parseReleaseReply(reply: unknown): ReleaseResult {
  const [status, released] = replyFields(QuotaScriptName.quotaRelease, reply, { released: 1, absent: 1, kept: 1 });
  return { status: status as ReleaseResult['status'], releasedMicros: released ?? 0 };
}

/** quota_limit_raise.lua's answer: the cached limit after the call, or no cached quota to raise. */
export type LimitRaiseResult = { status: 'raised' | 'kept'; limitMicros: number } | { status: 'tenant_missing' };

export function parseLimitRaiseReply(reply: unknown): LimitRaiseResult {
  const [status, limit = 0] = replyFields(QuotaScriptName.quotaLimitRaise, reply, { raised: 1, kept: 1, tenant_missing: 0 });
  if (status === 'raised' || status === 'kept') return { status, limitMicros: limit };
  return { status: 'tenant_missing' };
}

/** cache_warmup.lua's answer: true when it wrote the hash (created or replaced), false when it left it alone. */
export function parseWarmupReply(reply: unknown): boolean {
  if (reply !== 0 && reply !== 1) throw new UnexpectedScriptReplyError(QuotaScriptName.cacheWarmup, reply);
  return reply === 1;
}

/**
 * quota_check.lua's answer when budget windows were passed: the plain answer, a window that
 * cannot take the amount (`windowIndex`, 0-based, with the subject's denial status), or a
 * window counter to rebuild first.
 */
export type WindowedReserveResult =
  | (ReserveResult & { windowIndex?: undefined })
  | ({ status: 'insufficient_quota' | 'budget_exceeded'; windowIndex: number } & RemainingBalance)
  | { status: 'window_missing'; windowIndex: number };

/** Parses quota_check.lua's reply to a call with `windows` windows. */
export function parseWindowedReserveReply(reply: unknown, windows: number): WindowedReserveResult {
  if (Array.isArray(reply) && reply.length === 5 && Number.isSafeInteger(reply[4])) {
    const index = (reply[4] as number) - 1;
    if (index < 0 || index >= windows) throw new UnexpectedScriptReplyError(QuotaScriptName.quotaCheck, reply);
    if (reply[0] === 'window_missing') return { status: 'window_missing', windowIndex: index };
    if (reply[0] === 'insufficient_quota' || reply[0] === 'budget_exceeded') {
      const plain = parseReserveReply(reply.slice(0, 4));
      if (plain.status === 'insufficient_quota' || plain.status === 'budget_exceeded') return { ...plain, windowIndex: index };
    }
    throw new UnexpectedScriptReplyError(QuotaScriptName.quotaCheck, reply);
  }
  return parseReserveReply(reply);
}

/** window_settle.lua's answer: the delta applied to each window, in the order given. */
export function parseWindowSettleReply(reply: unknown, windows: number): number[] {
  if (!Array.isArray(reply) || reply[0] !== 'applied' || reply.length !== windows + 1 || !reply.slice(1).every((v) => Number.isSafeInteger(v))) {
    throw new UnexpectedScriptReplyError(QuotaScriptName.windowSettle, reply);
  }
  return reply.slice(1) as number[];
}
