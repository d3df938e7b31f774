/**
 * Transaction-aware dispatch (M5, the roadmap's TransactionAwareCelery): follow-up tasks
 * are registered inside a database transaction and reach Temporal only once it commits.
 *
 *   await dispatcher.transaction(async (trx, dispatch) => {
 *     await trx('budget_alert').insert(...);
 *     dispatch({ id: alertId, kind: DispatchKind.budgetAlert, tenantId, payload });
 *   });
 *
 * - Registered tasks are written to the outbox (dispatch_outbox) in the same transaction:
 *   they exist exactly when the transaction committed. A rollback leaves no row and sends
 *   nothing (M5.2).
 * - After the commit they are sent, in batches of DISPATCH_BATCH_SIZE concurrent workflow
 *   starts with one outbox update per batch (M5.3), then marked dispatched (M5.1).
 * - Workflow id = the task's deterministic id, reuse policy REJECT_DUPLICATE and conflict
 *   policy FAIL: a second start of a running or finished task is refused by Temporal
 *   (WorkflowExecutionAlreadyStartedError), which counts as sent. Sending twice is sending
 *   once (M5.4), so the drain and the after-commit send may overlap harmlessly.
 * - A crash or a Temporal outage between the commit and the send loses nothing: the row
 *   stays undispatched and drainOutbox() (an activity, run on a schedule) sends it later.
 *   A failed send never fails the caller: its transaction has committed.
 *
 * Why an outbox rather than sending from a commit hook: a hook runs in memory and dies
 * with the process; the row is as durable as the transaction that caused it.
 */
import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import type { Knex } from 'knex';
import type { Logger } from '../log';
import type { BillingMetrics } from '../metrics';
import { SearchKeys } from '../workflows/search-attributes';
import type { OutboxRepository, OutboxRow } from './outbox-repository';
import type { DispatchTask } from './task-kinds';

/** Registers a task in the current transaction; it is sent after the commit. */
export type Dispatch = (task: DispatchTask) => void;

export interface DispatcherOptions {
  /** Workflow starts sent at once, and outbox rows one drain round reads. @default 100 */
  batchSize?: number;
  /** The drain leaves younger rows to their after-commit send. @default 5 */
  drainMinAgeSeconds?: number;
  /** Dispatched rows older than this are deleted by the drain. @default 7 days */
  retentionSeconds?: number;
  /** Drain rounds (batches) per drainOutbox() call; the rest waits for the next call. @default 50 */
  maxDrainBatches?: number;
}

export interface DispatcherDeps extends DispatcherOptions {
  db: Knex;
  outbox: OutboxRepository;
  /** A Temporal client; only `workflow.start` is used. */
  client: Pick<Client, 'workflow'>;
  /** Where this process's tasks run (stored with each row, so the drain sends it there too). */
  taskQueue: string;
  metrics: Pick<BillingMetrics, 'dispatchSent' | 'dispatchFailures'>;
  log: Pick<Logger, 'warn' | 'debug'>;
}

export interface TransactionOptions {
  /**
   * Leave the send to the drain (no workflow start in this call): for bulk producers that
   * prefer one batched drain over a send per transaction. @default false
   */
  deferSend?: boolean;
}

/** What one send or drain did. */
export interface DispatchReport {
  /** Workflows started now. */
  started: number;
  /** Tasks Temporal already had (started before): sent once, so marked dispatched. */
  duplicates: number;
  /** Tasks whose start failed; their rows stay undispatched for the next drain. */
  failed: number;
  /** Batches sent (one outbox update each). */
  batches: number;
}

/** Thrown when `dispatch` is called after its transaction callback returned: the task could no longer join the transaction. */
export class DispatchOutsideTransactionError extends Error {
  override name = 'DispatchOutsideTransactionError';

  constructor(readonly taskId: string) {
    super(`task ${taskId} was dispatched after its transaction ended`);
  }
}

/** Thrown when a task id is empty or too long to be a workflow id. */
export class InvalidTaskIdError extends Error {
  override name = 'InvalidTaskIdError';

  constructor(readonly taskId: string) {
    super(`task id must be 1-1000 characters, got ${taskId.length}`);
  }
}

const MAX_TASK_ID_LENGTH = 1000;

function emptyReport(): DispatchReport {
  return { started: 0, duplicates: 0, failed: 0, batches: 0 };
}

function add(into: DispatchReport, more: DispatchReport): void {
  into.started += more.started;
  into.duplicates += more.duplicates;
  into.failed += more.failed;
  into.batches += more.batches;
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export function createDispatcher(deps: DispatcherDeps) {
  const batchSize = deps.batchSize ?? 100;
  const minAge = deps.drainMinAgeSeconds ?? 5;
  const retention = deps.retentionSeconds ?? 7 * 24 * 3600;
  const maxDrainBatches = deps.maxDrainBatches ?? 50;

  /** Starts one task's workflow: true when started now, false when Temporal already had it. */
  async function start(row: OutboxRow): Promise<boolean> {
    const { task } = row;
    try {
      await deps.client.workflow.start(task.kind, {
        workflowId: task.id,
        taskQueue: row.taskQueue,
        args: [task.payload],
        // A finished task is never run again (REJECT_DUPLICATE), a running one not started twice (FAIL).
        workflowIdReusePolicy: 'REJECT_DUPLICATE',
        workflowIdConflictPolicy: 'FAIL',
        ...(task.tenantId === undefined ? {} : { typedSearchAttributes: [{ key: SearchKeys.tenantId, value: task.tenantId }] }),
      });
      return true;
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) return false;
      throw err;
    }
  }

  /** One batch: concurrent starts, then one outbox update for the sent and one for the failed. */
  async function sendBatch(rows: readonly OutboxRow[]): Promise<DispatchReport> {
    const results = await Promise.allSettled(rows.map((row) => start(row)));
    const report: DispatchReport = { ...emptyReport(), batches: 1 };
    const sent: string[] = [];
    const failed: string[] = [];
    let firstError = '';
    results.forEach((result, i) => {
      const { task } = rows[i]!;
      if (result.status === 'fulfilled') {
        sent.push(task.id);
        if (result.value) report.started += 1;
        else report.duplicates += 1;
        deps.metrics.dispatchSent.inc({ kind: task.kind, result: result.value ? 'started' : 'duplicate' });
      } else {
        failed.push(task.id);
        report.failed += 1;
        firstError ||= result.reason instanceof Error ? result.reason.message : String(result.reason);
        deps.metrics.dispatchFailures.inc({ kind: task.kind });
      }
    });
    await deps.outbox.markDispatched(sent);
    if (failed.length > 0) {
      await deps.outbox.recordFailure(failed, firstError);
      deps.log.warn({ failed: failed.length, error: firstError }, 'dispatch: workflow starts failed; the outbox drain retries them');
    }
    return report;
  }

  async function send(rows: readonly OutboxRow[]): Promise<DispatchReport> {
    const report = emptyReport();
    for (const batch of chunks(rows, batchSize)) add(report, await sendBatch(batch));
    return report;
  }

  return {
    /**
     * Runs `fn` in a transaction; the tasks it dispatches are written to the outbox before
     * the commit and sent after it. Returns fn's result once the transaction committed and
     * the send was tried (a failed send is left to the drain, never thrown).
     */
    async transaction<T>(fn: (trx: Knex.Transaction, dispatch: Dispatch) => Promise<T>, opts: TransactionOptions = {}): Promise<T> {
      const tasks: DispatchTask[] = [];
      let open = true;
      const dispatch: Dispatch = (task) => {
        if (!open) throw new DispatchOutsideTransactionError(task.id);
        if (task.id.length === 0 || task.id.length > MAX_TASK_ID_LENGTH) throw new InvalidTaskIdError(task.id);
        tasks.push(task);
      };
      const result = await deps.db.transaction(async (trx) => {
        try {
          const value = await fn(trx, dispatch);
          open = false;
          await deps.outbox.insert(trx, tasks, deps.taskQueue);
          return value;
        } finally {
          open = false;
        }
      });
      if (tasks.length > 0 && !opts.deferSend) {
        try {
          await send(tasks.map((task) => ({ task, taskQueue: deps.taskQueue, attempts: 0 })));
        } catch (err) {
          // The outbox update after the starts failed (PostgreSQL): the rows stay undispatched
          // and the drain sends them again, a no-op for those already started.
          deps.log.warn({ err, tasks: tasks.length }, 'dispatch: sent after commit, but the outbox was not updated; the drain will finish it');
        }
      }
      return result;
    },

    /**
     * Sends every undispatched row older than DISPATCH_DRAIN_MIN_AGE_SECONDS, in batches,
     * up to maxDrainBatches; stops early when a whole batch fails (Temporal is likely down:
     * the next run retries). Also prunes dispatched rows past their retention.
     * `onBatch` is called after each batch (the activity heartbeats there); `taskQueue`
     * limits the drain to the rows of one task queue (every queue by default).
     */
    async drainOutbox(opts: { onBatch?: (report: DispatchReport) => void; taskQueue?: string } = {}): Promise<DispatchReport & { pruned: number }> {
      const report = emptyReport();
      for (let round = 0; round < maxDrainBatches; round += 1) {
        const rows = await deps.outbox.undispatched(minAge, batchSize, opts.taskQueue);
        if (rows.length === 0) break;
        const batch = await sendBatch(rows);
        add(report, batch);
        opts.onBatch?.(report);
        if (rows.length < batchSize || batch.failed === rows.length) break;
      }
      const pruned = await deps.outbox.pruneDispatched(retention);
      if (report.batches > 0) deps.log.debug({ ...report, pruned }, 'dispatch outbox drained');
      return { ...report, pruned };
    },
  };
}

export type Dispatcher = ReturnType<typeof createDispatcher>;
