/**
 * QuotaCheckStep (M2): reserve the worst-case cost against the tenant quota and
 * the key budget in one atomic Lua call, then record the reservation as a pending
 * ledger row (so the ledger alone always knows the true usage).
 * - a cache miss warms the counters from PostgreSQL with SETNX semantics, then retries (M2.2);
 * - Redis unreachable -> the PostgreSQL fallback admits under row locks (M2.3).
 * Idempotent per request id on both paths: a retry returns the first decision.
 * - Budget windows (issue 12, docs/budget-windows.md): the current window of every cap of
 *   the tenant and the key is computed from this step's clock and reserved in the same Lua
 *   call; the pending row records the window ids, so settlement moves those windows only.
 */
import type { Logger } from '../log';
import type { BillingMetrics } from '../metrics';
import type { BillingRepository } from '../db/billing-repository';
import type { QuotaScripts, ReserveResult, WindowedReserveResult } from '../redis/scripts';
import type { BudgetWindows, CurrentWindow } from '../services/budget-windows';
import { InvalidMicrosError, QuotaScriptRejectedError, UnexpectedScriptReplyError } from '../redis/scripts';
import { InvalidCacheKeyIdError } from '../redis/cache-keys';
import type { QuotaWarmup } from '../redis/quota-warmup';
import { billedRequestWorkflowId, operationOf, type AdmissionDecision, type BilledRequestInput } from '../workflows/definitions';

export interface QuotaCheckDeps {
  scripts: Pick<QuotaScripts, 'reserve' | 'release' | 'reserveWithWindows' | 'settleWindows' | 'reservedAt'>;
  ledger: Pick<BillingRepository, 'createPendingTransaction' | 'reserveInLedger'>;
  warmup: QuotaWarmup;
  metrics: BillingMetrics;
  log: Logger;
  /** Clock for reserved_at and the current budget windows; injectable for tests. */
  now?: () => number;
  /** Budget windows; without it no window is enforced (the caps are read from PostgreSQL per admission). */
  budgetWindows?: Pick<BudgetWindows, 'forAdmission' | 'warm'>;
}

/** Errors that are our bugs or bad data, not an outage: the fallback would not help. */
function isRedisOutage(err: unknown): boolean {
  return !(
    err instanceof QuotaScriptRejectedError ||
    err instanceof InvalidMicrosError ||
    err instanceof UnexpectedScriptReplyError ||
    err instanceof InvalidCacheKeyIdError
  );
}

export function createQuotaCheckStep(deps: QuotaCheckDeps) {
  const now = deps.now ?? Date.now;

  async function reserveInRedis(input: BilledRequestInput, nowMs: number, windows: readonly CurrentWindow[]): Promise<ReserveResult> {
    const args = { tenantId: input.tenantId, apiKeyId: input.apiKeyId, requestId: input.requestId, amountMicros: input.reservedMicros, nowMs };
    // At most two warm-ups (tenant, then key) and one per window before the reservation can run.
    for (let attempt = 0; ; attempt++) {
      const result: WindowedReserveResult = windows.length === 0 ? await deps.scripts.reserve(args) : await deps.scripts.reserveWithWindows(args, windows);
      if (result.status === 'window_missing') {
        const window = windows[result.windowIndex]!;
        if (attempt >= 2 + windows.length) throw new Error(`budget window counter ${window.windowId} vanished again after its warm-up`);
        await deps.budgetWindows!.warm(input.tenantId, window);
        continue;
      }
      if (attempt >= 2 + windows.length || (result.status !== 'tenant_missing' && result.status !== 'key_missing')) return result;
      const found = result.status === 'tenant_missing'
        ? await deps.warmup.warmTenant(input.tenantId)
        : await deps.warmup.warmKey(input.tenantId, input.apiKeyId);
      if (!found) return result; // not in PostgreSQL either: a real denial
    }
  }

  return async function quotaCheckStep(input: BilledRequestInput): Promise<AdmissionDecision> {
    const stopTimer = deps.metrics.admissionDuration.startTimer();
    let decision: AdmissionDecision;
    let redisResult: ReserveResult | undefined;
    const nowMs = now();
    // Read before Redis is tried, so both admission paths enforce the same windows.
    let windows = deps.budgetWindows ? await deps.budgetWindows.forAdmission(input.tenantId, input.apiKeyId, nowMs) : [];
    try {
      redisResult = await reserveInRedis(input, nowMs, windows);
      if (redisResult.status === 'duplicate' && deps.budgetWindows && windows.length > 0) {
        // A retry (e.g. after a crash between the reservation and the pending row), maybe past a
        // boundary: the row must name the windows the FIRST attempt reserved in, those of its time.
        const first = await deps.scripts.reservedAt(input.tenantId, input.requestId);
        if (first !== null && first !== nowMs) windows = await deps.budgetWindows.forAdmission(input.tenantId, input.apiKeyId, first);
      }
      deps.metrics.redisFallbackActive.set(0);
    } catch (err) {
      if (!isRedisOutage(err)) throw err;
      deps.metrics.redisFallbackActive.set(1);
      deps.log.warn({ requestId: input.requestId, tenantId: input.tenantId, err: (err as Error).message }, 'Redis unreachable: admission through the PostgreSQL fallback');
    }
    const pending = {
      requestId: input.requestId,
      tenantId: input.tenantId,
      apiKeyId: input.apiKeyId,
      workflowId: billedRequestWorkflowId(input.requestId),
      model: input.model,
      operation: operationOf(input),
      reservedMicros: input.reservedMicros,
      promptTokens: input.promptTokens,
      budgetWindows: windows.map((w) => w.windowId),
    };
    if (redisResult) {
      if (redisResult.status === 'reserved' || redisResult.status === 'duplicate') {
        decision = { admitted: true, reservedMicros: redisResult.reservedMicros, path: 'redis', duplicate: redisResult.status === 'duplicate' };
        try {
          await deps.ledger.createPendingTransaction({ ...pending, reservedMicros: redisResult.reservedMicros, admissionPath: 'redis' });
        } catch (err) {
          // The ledger must know every reservation Redis counts: give this one back before failing
          // (a retry reserves again from scratch). A reservation made by an earlier attempt stays:
          // that attempt's ledger row may exist.
          if (redisResult.status === 'reserved') {
            // The windows first: release forgets the record that says what they hold.
            await deps.scripts
              .settleWindows({ tenantId: input.tenantId, requestId: input.requestId, windowIds: pending.budgetWindows, costMicros: 0 })
              .then(() => deps.scripts.release({ tenantId: input.tenantId, apiKeyId: input.apiKeyId, requestId: input.requestId }))
              .catch((releaseErr: unknown) => deps.log.error({ requestId: input.requestId, err: (releaseErr as Error).message }, 'could not release a reservation the ledger does not know'));
          }
          throw err;
        }
      } else {
        decision = { admitted: false, reason: redisResult.status, path: 'redis' };
      }
    } else {
      const result = await deps.ledger.reserveInLedger({ ...pending, windowLimits: windows });
      decision = result.status === 'reserved' || result.status === 'duplicate'
        ? { admitted: true, reservedMicros: result.reservedMicros, path: result.entry.admissionPath ?? 'postgres', duplicate: result.status === 'duplicate' }
        : { admitted: false, reason: result.status, path: 'postgres' };
    }
    const outcome = decision.admitted ? (decision.duplicate ? 'duplicate' : 'admitted') : decision.reason;
    stopTimer({ outcome });
    deps.metrics.admissions.inc({ outcome, path: decision.path });
    deps.log.info(
      { requestId: input.requestId, workflowId: billedRequestWorkflowId(input.requestId), tenantId: input.tenantId, apiKeyId: input.apiKeyId, outcome, path: decision.path, reservedMicros: input.reservedMicros },
      'admission',
    );
    return decision;
  };
}
