/**
 * BillingStep (M3): settles a request exactly once.
 * - The ledger only: the pending row written at admission is committed with the
 *   real cost, or voided (full refund) when nothing was delivered. Never a second
 *   deduction (M3.1): admission already reserved.
 * - The cost difference reaches Redis through quota_deduct.lua and
 *   apikey_budget_deduct.lua, each idempotent per request id (M3.2, M3.3).
 * - When the upstream step failed for good, the relay tells what reached the client.
 * Retried without limit by the workflow: a Redis outage delays the adjustment, never loses it.
 */
import { costMicros } from '../billing/pricing';
import type { BillingRepository } from '../db/billing-repository';
import type { Logger } from '../log';
import type { BillingMetrics } from '../observability/metrics';
import type { QuotaScripts } from '../redis/scripts';
import type { RequestRelay } from '../relay/request-relay';
import { LedgerStateError, type AdmissionPath, type LedgerEntry } from '../db/ledger-types';
import type { BilledRequestInput, SettlementResult, UpstreamOutcome } from '../workflows/definitions';
import type { QuotaWarmup } from './quota-warmup';
import { hasOutput, INTERRUPTED_ERROR, outcomeFromRelay, terminalOf } from './relay-recovery';

export interface BillingStepDeps {
  ledger: Pick<BillingRepository, 'commitPendingTransaction' | 'voidPendingTransaction' | 'findByRequestId'>;
  scripts: Pick<QuotaScripts, 'adjustTenant' | 'adjustKeyBudget'>;
  warmup: QuotaWarmup;
  relay: Pick<RequestRelay, 'entries' | 'writer'>;
  metrics: BillingMetrics;
  log: Logger;
}

const UPSTREAM_FAILED = { status: 502, message: 'upstream call failed', type: 'upstream_error', code: 'upstream_error' } as const;

export function createBillingStep(deps: BillingStepDeps) {
  /** The upstream step gave up: bill what the relay shows was delivered, else nothing, and end the client's stream. */
  async function outcomeAfterFailure(input: BilledRequestInput): Promise<UpstreamOutcome> {
    if (input.relayMode === 'redis') {
      const entries = await deps.relay.entries(input.tenantId, input.requestId);
      const delivered = hasOutput(entries);
      if (!terminalOf(entries)) {
        const writer = deps.relay.writer(input.tenantId, input.requestId);
        writer.push({ type: 'error', data: delivered ? { ...INTERRUPTED_ERROR } : { ...UPSTREAM_FAILED } });
        await writer.flush();
      }
      if (delivered) return outcomeFromRelay(input, 'unknown', entries);
    }
    return { status: 'failed_before_output', promptTokens: 0, completionTokens: 0, tokenSource: 'upstream', channel: 'unknown', error: { ...UPSTREAM_FAILED } };
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
   * Applies `delta` to the Redis counters once per request. A counter missing from
   * Redis (data lost) is warmed from the ledger, which already holds this settlement,
   * so the request is only marked as adjusted (delta 0).
   */
  async function adjustRedis(input: BilledRequestInput, delta: number): Promise<void> {
    const { tenantId, apiKeyId, requestId } = input;
    let tenant = await deps.scripts.adjustTenant({ tenantId, requestId, deltaMicros: delta });
    if (tenant.status === 'tenant_missing' && (await deps.warmup.warmTenant(tenantId))) {
      tenant = await deps.scripts.adjustTenant({ tenantId, requestId, deltaMicros: 0 });
    }
    let key = await deps.scripts.adjustKeyBudget({ tenantId, apiKeyId, requestId, deltaMicros: delta });
    if (key.status === 'key_missing' && (await deps.warmup.warmKey(tenantId, apiKeyId))) {
      key = await deps.scripts.adjustKeyBudget({ tenantId, apiKeyId, requestId, deltaMicros: 0 });
    }
    if (tenant.status === 'tenant_missing' || key.status === 'key_missing') {
      deps.log.warn({ requestId, tenantId, apiKeyId }, 'settlement adjustment skipped: tenant or key no longer exists');
    }
  }

  return async function billingStep(input: BilledRequestInput, path: AdmissionPath, upstream: UpstreamOutcome | null): Promise<SettlementResult> {
    const stopTimer = deps.metrics.settlementDuration.startTimer();
    const outcome = upstream ?? (await outcomeAfterFailure(input));
    const { requestId, tenantId } = input;
    // Redis saw a reservation only when admission went through Redis (the fallback wrote the ledger alone).
    const reservedInRedis = (reserved: number): number => (path === 'redis' ? reserved : 0);

    const { changed, entry } = outcome.status === 'failed_before_output'
      ? await settleOnce(requestId, async () => {
          const voided = await deps.ledger.voidPendingTransaction({ requestId, reason: outcome.error?.message ?? 'no output delivered' });
          return { changed: voided.voided, entry: voided.entry };
        })
      : await settleOnce(requestId, async () => {
          const cost = costMicros(input.price, { promptTokens: outcome.promptTokens, completionTokens: outcome.completionTokens });
          const committed = await deps.ledger.commitPendingTransaction({
            requestId,
            amountMicros: cost,
            promptTokens: outcome.promptTokens,
            completionTokens: outcome.completionTokens,
            tokenSource: outcome.tokenSource,
          });
          return { changed: committed.committed, entry: committed.entry };
        });
    // A replayed settlement keeps the first settlement's figures (exactly once); a voided one costs 0 and refunds what Redis reserved.
    const billed = entry.status === 'committed' ? (entry.amountMicros ?? 0) : 0;
    const result: SettlementResult = {
      status: entry.status === 'committed' ? 'committed' : 'voided',
      costMicros: billed,
      deltaMicros: billed - reservedInRedis(entry.reservedMicros),
    };
    if (changed && result.status === 'committed') {
      deps.metrics.costMicros.inc({ model: input.model }, billed);
      if (billed > entry.reservedMicros) deps.metrics.overageMicros.inc(billed - entry.reservedMicros);
    }
    await adjustRedis(input, result.deltaMicros);

    stopTimer();
    deps.metrics.settlements.inc({ outcome: result.status, token_source: outcome.tokenSource });
    deps.log.info(
      { requestId, tenantId, apiKeyId: input.apiKeyId, status: result.status, upstream: outcome.status, costMicros: result.costMicros, deltaMicros: result.deltaMicros, tokenSource: outcome.tokenSource },
      'settlement',
    );
    return result;
  };
}
