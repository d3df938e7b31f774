/**
 * The reservation sweeper (issue 9 item 4): every reservation ends committed or voided,
 * also when its workflow does not (terminated by hand, timed out, failed, or gone).
 * TigerBeetle's pending transfers with a timeout are the model: a pending row older
 * than SWEEP_PENDING_AFTER_SECONDS is examined, and if its workflow no longer runs it
 * is settled through the SAME BillingStep the workflow runs, so the same rules apply:
 * bill what the relay shows was delivered (or what the completed UpstreamCallStep in
 * history reported), void when nothing was, move the Redis counters to that cost once,
 * delete the request body. BillingStep is idempotent per request id and keeps the first
 * settlement, so a sweep racing the workflow's own settlement, another sweep, or a
 * retried sweep activity settles nothing twice. The same run deletes expired bodies.
 *
 * The age is a filter, not the decision: Temporal's answer decides. It keeps the sweep
 * cheap (it never describes the many requests that end in seconds) and lets a closed
 * workflow's orphaned activities stop first (an UpstreamCallStep learns at its next
 * heartbeat, within seconds, that its workflow is gone, and stops writing to the relay).
 * It must stay below the relay's life (RELAY_TTL_SECONDS), which is the evidence of
 * delivery: src/config.ts refuses a larger one. docs/sweeper.md is the operator's view.
 */
import { hasOutput } from '../activities/relay-recovery';
import type { BillingRepository } from '../db/billing-repository';
import type { LedgerEntry } from '../db/ledger-types';
import type { ModelPriceRepository } from '../db/model-price-repository';
import type { ConversationRepository } from '../db/conversation-repository';
import type { RequestBodyRepository } from '../db/request-body-repository';
import type { Logger } from '../log';
import type { BillingMetrics } from '../metrics';
import type { RequestRelay } from '../redis/request-relay';
import { billedRequestWorkflowId, type BilledRequestInput, type SettlementResult, type UpstreamOutcome } from '../workflows/definitions';
import { inputFromHistory, inputFromLedger, outcomeFromHistory } from './settlement-input';
import { createWorkflowInspector } from './workflow-inspection';
import type { Client } from '@temporalio/client';

/** What one run did; plain numbers, so it serialises as an activity result. */
export interface SweepSummary {
  /** Pending rows past the age threshold that this run looked at. */
  examined: number;
  /** Of those, left alone: their workflow still runs and will settle them. */
  stillRunning: number;
  /** Settled by this run: committed for what was delivered. */
  committed: number;
  /** Settled by this run: voided (full refund), nothing was delivered. */
  voided: number;
  /** Of committed + voided, settled from the ledger row alone: no history (see settlement-input.ts). */
  withoutHistory: number;
  /** Rows that could not be examined or settled (they stay pending for the next run), and a failed body cleanup. */
  errors: number;
  /** Expired rows removed from the body store (request bodies and outputs a crash left behind). */
  expiredBodiesDeleted: number;
  /** Conversation messages past CONVERSATION_RETENTION_DAYS removed (only when the sweeper has the conversation store). */
  expiredMessagesDeleted?: number;
  /** The run stopped at SWEEP_MAX_PER_RUN or was cancelled: older rows may be left for the next run. */
  truncated: boolean;
}

/** The label values of billing_swept_reservations_total. */
export const SweepOutcome = {
  committed: 'committed',
  voided: 'voided',
  stillRunning: 'still_running',
  error: 'error',
} as const;
export type SweepOutcome = (typeof SweepOutcome)[keyof typeof SweepOutcome];

/** One examined row: its outcome and, when this run settled it, what it was settled from. */
export interface SweptRow {
  requestId: string;
  outcome: SweepOutcome;
  /** history: the workflow's decoded input (and upstream outcome); ledger: the row alone (no history). */
  settledFrom?: 'history' | 'ledger';
}

export interface SweeperSettings {
  /** Only rows pending longer than this are examined (SWEEP_PENDING_AFTER_SECONDS). */
  pendingAfterSeconds: number;
  /** Most rows one run examines (SWEEP_MAX_PER_RUN). */
  maxPerRun: number;
  /** Rows read per ledger query. @default 100 */
  batchSize?: number;
  /** Rows examined at once (each is a describe, maybe a history fetch, and a settlement). @default 4 */
  concurrency?: number;
  /** Conversation messages older than this many days are deleted at the end of a run (CONVERSATION_RETENTION_DAYS). */
  conversationRetentionDays?: number;
}

export interface ReservationSweeperDeps {
  ledger: Pick<BillingRepository, 'listStalePending'>;
  /** A client in the billed requests' namespace with the app's data converter (history is encrypted). */
  client: Pick<Client, 'workflow'>;
  /** The billed request's own BillingStep (src/activities/billing-step.ts). */
  billingStep: (input: BilledRequestInput, upstream: UpstreamOutcome | null) => Promise<SettlementResult>;
  prices: Pick<ModelPriceRepository, 'find'>;
  relay: Pick<RequestRelay, 'entries'>;
  bodies: Pick<RequestBodyRepository, 'deleteExpired'>;
  /** The conversation store: its messages past the retention are deleted by each run. */
  conversations?: Pick<ConversationRepository, 'deleteOlderThan'>;
  metrics: BillingMetrics;
  log: Logger;
  settings: SweeperSettings;
}

export interface SweepOptions {
  /** Called after each row with the summary so far (an activity heartbeats with it). */
  onProgress?: (summary: Readonly<SweepSummary>) => void;
  /** Called with each examined row's outcome (what the log lines say, for a caller that wants it per request). */
  onRow?: (row: SweptRow) => void;
  /** Stops the run between rows (an activity's cancellation signal). */
  signal?: AbortSignal;
}

const DEFAULT_BATCH_SIZE = 100;
const DEFAULT_CONCURRENCY = 4;

type RowResult = { outcome: 'still_running' } | { outcome: 'committed' | 'voided'; withHistory: boolean };

/** Runs `fn` over `items`, at most `limit` at a time, starting no new item once `stop()` is true. */
async function forEachBounded<T>(items: readonly T[], limit: number, stop: () => boolean, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length && !stop()) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}

export function createReservationSweeper(deps: ReservationSweeperDeps) {
  const inspector = createWorkflowInspector(deps.client);
  const batchSize = deps.settings.batchSize ?? DEFAULT_BATCH_SIZE;
  const concurrency = deps.settings.concurrency ?? DEFAULT_CONCURRENCY;

  /** No history: the row's own data, with the current price when the relay shows delivered output. */
  async function inputWithoutHistory(entry: LedgerEntry): Promise<BilledRequestInput> {
    const price = entry.model === null ? null : await deps.prices.find(entry.model);
    const delivered = price === null && hasOutput(await deps.relay.entries(entry.tenantId, entry.requestId));
    return inputFromLedger(entry, price, delivered);
  }

  async function sweepRow(entry: LedgerEntry): Promise<RowResult> {
    const workflowId = entry.workflowId ?? billedRequestWorkflowId(entry.requestId);
    const state = await inspector.state(workflowId);
    if (state.kind === 'running') return { outcome: 'still_running' };
    const run = state.kind === 'closed' ? await inspector.recover(workflowId, state.runId) : undefined;
    const input = run ? inputFromHistory(run.input, entry) : await inputWithoutHistory(entry);
    const upstream = run ? outcomeFromHistory(run.upstream, entry.requestId) : null;
    const settlement = await deps.billingStep(input, upstream);
    const workflowStatus = state.kind === 'closed' ? state.status : 'NOT_FOUND';
    // Without history the price may be today's, not the admission's: worth a warning line.
    deps.log[run ? 'info' : 'warn'](
      { requestId: entry.requestId, workflowId, tenantId: entry.tenantId, apiKeyId: entry.apiKeyId, workflowStatus, withHistory: run !== undefined, status: settlement.status, costMicros: settlement.costMicros, reservedMicros: entry.reservedMicros },
      run ? 'swept reservation' : 'swept reservation without history (ledger row, current price list)',
    );
    return { outcome: settlement.status, withHistory: run !== undefined };
  }

  return {
    async sweep(opts: SweepOptions = {}): Promise<SweepSummary> {
      const summary: SweepSummary = { examined: 0, stillRunning: 0, committed: 0, voided: 0, withoutHistory: 0, errors: 0, expiredBodiesDeleted: 0, truncated: false };
      const stopped = (): boolean => opts.signal?.aborted === true;

      let after: Parameters<BillingRepository['listStalePending']>[0]['after'] = null;
      for (;;) {
        const remaining = deps.settings.maxPerRun - summary.examined;
        if (remaining <= 0 || stopped()) {
          summary.truncated = true;
          break;
        }
        const page = await deps.ledger.listStalePending({ olderThanSeconds: deps.settings.pendingAfterSeconds, after, limit: Math.min(batchSize, remaining) });
        await forEachBounded(page.entries, concurrency, stopped, async (entry) => {
          summary.examined++;
          let outcome: SweepOutcome;
          let settledFrom: SweptRow['settledFrom'];
          try {
            const result = await sweepRow(entry);
            if (result.outcome === 'still_running') summary.stillRunning++;
            else {
              summary[result.outcome]++;
              if (!result.withHistory) summary.withoutHistory++;
              settledFrom = result.withHistory ? 'history' : 'ledger';
            }
            outcome = result.outcome === 'still_running' ? SweepOutcome.stillRunning : result.outcome;
          } catch (err) {
            // The row stays pending; the next run tries again (an alert fires if errors persist).
            summary.errors++;
            outcome = SweepOutcome.error;
            deps.log.error({ requestId: entry.requestId, tenantId: entry.tenantId, err: (err as Error).message, errorType: (err as Error).name }, 'sweep of a pending reservation failed');
          }
          deps.metrics.sweptReservations.inc({ outcome });
          opts.onRow?.({ requestId: entry.requestId, outcome, ...(settledFrom ? { settledFrom } : {}) });
          opts.onProgress?.(summary);
        });
        if (page.next === null) break;
        after = page.next;
      }
      if (stopped()) summary.truncated = true;

      try {
        summary.expiredBodiesDeleted = await deps.bodies.deleteExpired();
      } catch (err) {
        summary.errors++;
        deps.log.error({ err: (err as Error).message }, 'expired request bodies could not be deleted');
      }
      if (deps.conversations && deps.settings.conversationRetentionDays !== undefined) {
        try {
          summary.expiredMessagesDeleted = await deps.conversations.deleteOlderThan(deps.settings.conversationRetentionDays);
        } catch (err) {
          summary.errors++;
          deps.log.error({ err: (err as Error).message }, 'conversation messages past their retention could not be deleted');
        }
      }
      deps.log.info({ ...summary }, 'sweep finished');
      return summary;
    },
  };
}

export type ReservationSweeper = ReturnType<typeof createReservationSweeper>;
