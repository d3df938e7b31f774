/**
 * BillingStep (M3): settles a request exactly once.
 * - The ledger only: the pending row written at admission is committed with the
 *   real cost, or voided (full refund) when nothing was delivered. Never a second
 *   deduction (M3.1): admission already reserved.
 * - Redis is settled "to cost" through quota_deduct.lua and apikey_budget_deduct.lua,
 *   each idempotent per request id (M3.2, M3.3): the step passes the final cost (0 for a
 *   void) and each script subtracts the reservation its counter holds for the request, as
 *   the request record tells, whichever path admitted it (a fallback admission may have
 *   been counted by a later warm-up; a Redis reservation may have been retried through
 *   the fallback).
 * - Budget windows (issue 12): settled to cost on the windows the ledger row names.
 * - When the upstream step failed for good, the relay tells what reached the client.
 * - Settled, the request body leaves the body store (idempotent: a replayed settlement deletes nothing),
 *   except for an exchange that goes to its conversation (appendsToConversation): ConversationAppendStep
 *   reads the user messages from it, then deletes it.
 * - Then the budget alert thresholds are checked on the counters the settlement left
 *   (src/alerts/budget-alerts.ts); a failed check is counted and logged, never fails the
 *   settlement (the next settlement checks again).
 * Retried without limit by the workflow: a Redis outage delays the adjustment, never loses it.
 */
import { costMicros } from '../billing/pricing';
import type { BillingRepository } from '../db/billing-repository';
import type { RequestBodyRepository } from '../db/request-body-repository';
import type { Logger } from '../log';
import type { BillingMetrics } from '../metrics';
import type { QuotaScripts, SettleKeyResult, SettleTenantResult } from '../redis/scripts';
import type { BudgetAlerts } from '../alerts/budget-alerts';
import type { RequestRelay } from '../redis/request-relay';
import { LedgerStateError, type LedgerEntry } from '../db/ledger-types';
import { appendsToConversation, billedRequestWorkflowId, type BilledRequestInput, type SettlementResult, type UpstreamOutcome } from '../workflows/definitions';
import type { QuotaWarmup } from '../redis/quota-warmup';
import { endRelayIfOpen, hasOutput, outcomeFromRelay, UPSTREAM_FAILED_ERROR } from './relay-recovery';

export interface BillingStepDeps {
  ledger: Pick<BillingRepository, 'commitPendingTransaction' | 'voidPendingTransaction' | 'findByRequestId'>;
  scripts: Pick<QuotaScripts, 'settleTenant' | 'settleKeyBudget' | 'settleWindows'>;
  warmup: QuotaWarmup;
  relay: Pick<RequestRelay, 'entries' | 'writer'>;
  /** The request body is deleted once the request is settled. */
  bodies: Pick<RequestBodyRepository, 'delete'>;
  metrics: BillingMetrics;
  log: Logger;
  /** Budget alerts on the settled counters; without it none are raised. */
  budgetAlerts?: Pick<BudgetAlerts, 'afterSettlement'>;
}

/** Thrown when a counter warmed for a settlement is missing again at once (deleted concurrently): the activity retries. */
export class SettlementCounterMissingError extends Error {
  override name = 'SettlementCounterMissingError';

  constructor(
    readonly tenantId: string,
    readonly requestId: string,
  ) {
    super(`Redis counter of tenant ${tenantId} vanished while settling request ${requestId}`);
  }
}


/** The token classes of an outcome, 0 where it reports none (outcomes recorded before classes existed). */
function ledgerTokenClasses(outcome: UpstreamOutcome): { cachedPromptTokens: number; reasoningTokens: number; audioPromptTokens: number; audioCompletionTokens: number } {
  return {
    cachedPromptTokens: Math.min(outcome.cachedPromptTokens ?? 0, outcome.promptTokens),
    reasoningTokens: outcome.reasoningTokens ?? 0,
    audioPromptTokens: outcome.audioPromptTokens ?? 0,
    audioCompletionTokens: outcome.audioCompletionTokens ?? 0,
  };
}

export function createBillingStep(deps: BillingStepDeps) {
  /** The upstream step gave up: bill what the relay shows was delivered, else nothing, and end the client's stream. */
  async function outcomeAfterFailure(input: BilledRequestInput): Promise<UpstreamOutcome> {
    if (input.relayMode === 'redis') {
      const entries = await deps.relay.entries(input.tenantId, input.requestId);
      await endRelayIfOpen(deps.relay, input, entries);
      if (hasOutput(entries)) return outcomeFromRelay(input, 'unknown', entries);
    }
    return { status: 'failed_before_output', promptTokens: 0, completionTokens: 0, tokenSource: 'upstream', channel: 'unknown', error: { ...UPSTREAM_FAILED_ERROR } };
  }

  /**
   * Runs the ledger transition (commit or void). When the row was already settled the
   * other way (a retried settlement that now sees another outcome, e.g. the relay changed
   * in between), the repository refuses with LedgerStateError on every retry; the first
   * settlement stands instead (exactly once), so the workflow cannot retry forever.
   */
  async function settleOnce(requestId: string, transition: () => Promise<{ changed: boolean; entry: LedgerEntry }>): Promise<{ changed: boolean; entry: LedgerEntry }> {
    try {
      return await transition();
    } catch (err) {
      if (!(err instanceof LedgerStateError)) throw err;
      const entry = await deps.ledger.findByRequestId(requestId);
      if (entry === undefined || entry.status === 'pending') throw err;
      deps.log.warn({ requestId, status: entry.status, attempted: err.attempted }, 'settlement already made the other way: keeping the first one');
      return { changed: false, entry };
    }
  }

  /**
   * Settles the Redis counters to `cost`, once per request; returns the delta applied to
   * the tenant counter (the first one applied, for a replay).
   *
   * A counter missing from Redis (data lost) is warmed from the ledger, read after this
   * request's ledger commit, so it already holds the final cost: the warm-up marks this
   * request's record with it, and the retried script (afterWarmup) applies 0, or cost minus
   * the reservation when a concurrent warm-up whose snapshot predates the commit built the
   * counter (that warm-up marked the reservation as pending).
   *
   * Remaining race, healed by the consistency check (src/consistency, docs/consistency.md):
   * a request record that outlives its counter. If the tenant or key hash alone is lost and
   * rebuilt by ANOTHER request's warm-up while this request's quota_check.lua record
   * survives, the record still says "reserved on this counter": (a) rebuilt between this
   * request's ledger commit and its first settlement attempt, the counter holds the cost and
   * the script subtracts the reservation anyway (Redis ends low by it); (b) rebuilt between
   * the Redis reservation and the pending ledger row, the counter never held it (same
   * effect); (c) a settlement attempt that dies between a warm-up another request won and
   * its afterWarmup call retries without afterWarmup (same effect). Losing only the hash
   * needs eviction of a key without expiry (Redis must run with noeviction) or a manual
   * delete; a restart or failover loses records and hashes together, and then the markers
   * are exact. Whatever the cause, the counter then stays off the ledger with nothing moving
   * it back: the hourly check confirms that drift and rebuilds the counter from one ledger
   * snapshot, marking the records of the pending reservations and of the rows settled
   * within the record TTL, so the settlements still to come apply exactly what the rebuilt
   * counter lacks (0 for a request already committed). One case is left to the check after
   * it: a Redis reservation whose pending ledger row is written only after a heal (the
   * insert stalled longer than the confirmation grace) is in neither the snapshot nor its
   * marks, so its settlement subtracts a reservation the rebuilt counter never held; the
   * next check finds that drift and heals again.
   */
  async function settleRedis(input: BilledRequestInput, cost: number): Promise<{ tenant: SettleTenantResult; key: SettleKeyResult }> {
    const { tenantId, apiKeyId, requestId } = input;
    const settled = { requestId, costMicros: cost };
    let tenant = await deps.scripts.settleTenant({ tenantId, requestId, costMicros: cost });
    if (tenant.status === 'tenant_missing' && (await deps.warmup.warmTenant(tenantId, settled))) {
      tenant = await deps.scripts.settleTenant({ tenantId, requestId, costMicros: cost, afterWarmup: true });
      if (tenant.status === 'tenant_missing') throw new SettlementCounterMissingError(tenantId, requestId);
    }
    let key = await deps.scripts.settleKeyBudget({ tenantId, apiKeyId, requestId, costMicros: cost });
    if (key.status === 'key_missing' && (await deps.warmup.warmKey(tenantId, apiKeyId, settled))) {
      key = await deps.scripts.settleKeyBudget({ tenantId, apiKeyId, requestId, costMicros: cost, afterWarmup: true });
      if (key.status === 'key_missing') throw new SettlementCounterMissingError(tenantId, requestId);
    }
    if (tenant.status === 'tenant_missing' || key.status === 'key_missing') {
      deps.log.warn({ requestId, tenantId, apiKeyId }, 'settlement in Redis skipped: tenant or key no longer exists');
    }
    return { tenant, key };
  }

  /** Raises the budget alerts this settlement's counters call for; never fails the settlement. */
  async function checkAlerts(input: BilledRequestInput, settled: { tenant: SettleTenantResult; key: SettleKeyResult }): Promise<void> {
    if (!deps.budgetAlerts) return;
    try {
      await deps.budgetAlerts.afterSettlement({ tenantId: input.tenantId, apiKeyId: input.apiKeyId, ...settled });
    } catch (err) {
      deps.metrics.budgetAlertCheckFailures.inc();
      deps.log.warn({ err, requestId: input.requestId, tenantId: input.tenantId }, 'budget alert check failed; the next settlement checks again');
    }
  }

  return async function billingStep(input: BilledRequestInput, upstream: UpstreamOutcome | null): Promise<SettlementResult> {
    const stopTimer = deps.metrics.settlementDuration.startTimer();
    const outcome = upstream ?? (await outcomeAfterFailure(input));
    const { requestId, tenantId } = input;

    const { changed, entry } = outcome.status === 'failed_before_output'
      ? await settleOnce(requestId, async () => {
          const voided = await deps.ledger.voidPendingTransaction({ requestId, reason: outcome.error?.message ?? 'no output delivered' });
          return { changed: voided.voided, entry: voided.entry };
        })
      : await settleOnce(requestId, async () => {
          // Cached prompt tokens at the model's cached-input price (issue 11); the other classes are recorded.
          const classes = ledgerTokenClasses(outcome);
          const cost = costMicros(input.price, { promptTokens: outcome.promptTokens, completionTokens: outcome.completionTokens, cachedPromptTokens: classes.cachedPromptTokens });
          const committed = await deps.ledger.commitPendingTransaction({
            requestId,
            amountMicros: cost,
            promptTokens: outcome.promptTokens,
            completionTokens: outcome.completionTokens,
            tokenSource: outcome.tokenSource,
            ...classes,
          });
          return { changed: committed.committed, entry: committed.entry };
        });
    // A replayed settlement keeps the first settlement's figures (exactly once); a voided one costs 0.
    const billed = entry.status === 'committed' ? (entry.amountMicros ?? 0) : 0;
    if (changed && entry.status === 'committed') {
      deps.metrics.costMicros.inc({ model: input.model }, billed);
      if (billed > entry.reservedMicros) deps.metrics.overageMicros.inc(billed - entry.reservedMicros);
    }
    const settled = await settleRedis(input, billed);
    // The windows the LEDGER ROW names (fixed at admission), never the current ones: a request
    // reserved before a boundary settles into its old window and cannot touch the new one.
    await deps.scripts.settleWindows({ tenantId, requestId, windowIds: entry.budgetWindows ?? [], costMicros: billed });
    const result: SettlementResult = {
      status: entry.status === 'committed' ? 'committed' : 'voided',
      costMicros: billed,
      deltaMicros: settled.tenant.status === 'tenant_missing' ? 0 : settled.tenant.deltaMicros,
    };
    // Settled (ledger and Redis): the body is not needed any more. After the Redis settlement, so the
    // ledger and the counters stay as close in time as before (readers compare them at quiescence).
    if (!appendsToConversation(input, outcome, result)) await deps.bodies.delete(requestId, 'request');

    stopTimer();
    deps.metrics.settlements.inc({ outcome: result.status, token_source: outcome.tokenSource });
    deps.log.info(
      { requestId, workflowId: billedRequestWorkflowId(requestId), tenantId, apiKeyId: input.apiKeyId, status: result.status, upstream: outcome.status, costMicros: result.costMicros, deltaMicros: result.deltaMicros, tokenSource: outcome.tokenSource },
      'settlement',
    );
    // Outside the settlement's timing: a crossing (rare) adds a transaction and a workflow start.
    await checkAlerts(input, settled);
    return result;
  };
}
