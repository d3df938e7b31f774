/**
 * The dispatch outbox (table dispatch_outbox, M5): rows are inserted inside the caller's
 * transaction, marked dispatched once their workflow was started (or found started), and
 * read back by the drain when a crash or an outage left them undispatched.
 */
import type { Knex } from 'knex';
import type { DispatchKind, DispatchTask } from './task-kinds';

/** A stored task, as the drain sends it. */
export interface OutboxRow {
  task: DispatchTask;
  taskQueue: string;
  attempts: number;
}

interface Row {
  task_id: string;
  kind: string;
  task_queue: string;
  tenant_id: string | null;
  payload: unknown;
  attempts: number;
}

/** Longest error text kept on a row (the start error's message; never a payload). */
const MAX_ERROR_LENGTH = 500;

export function createOutboxRepository(db: Knex) {
  return {
    /** Writes the tasks in `trx`; a task id already in the outbox is kept as it is (registering twice is once). */
    async insert(trx: Knex.Transaction, tasks: readonly DispatchTask[], taskQueue: string): Promise<void> {
      if (tasks.length === 0) return;
      await trx('dispatch_outbox')
        .insert(tasks.map((task) => ({
          task_id: task.id,
          kind: task.kind,
          task_queue: taskQueue,
          tenant_id: task.tenantId ?? null,
          payload: JSON.stringify(task.payload),
        })))
        .onConflict('task_id')
        .ignore();
    },

    /**
     * Undispatched rows created at least `minAgeSeconds` ago, at most `limit`: the ones
     * tried least first, so a row that keeps failing cannot hold up the others. With
     * `taskQueue`, only the rows of that task queue.
     */
    async undispatched(minAgeSeconds: number, limit: number, taskQueue?: string): Promise<OutboxRow[]> {
      const rows = await db<Row>('dispatch_outbox')
        .select('task_id', 'kind', 'task_queue', 'tenant_id', 'payload', 'attempts')
        .whereNull('dispatched_at')
        .andWhere(taskQueue === undefined ? {} : { task_queue: taskQueue })
        .andWhere('created_at', '<=', db.raw('now() - make_interval(secs => ?)', [minAgeSeconds]))
        .orderBy([{ column: 'attempts', order: 'asc' }, { column: 'created_at', order: 'asc' }])
        .limit(limit);
      return rows.map((row) => ({
        task: {
          id: row.task_id,
          kind: row.kind as DispatchKind,
          ...(row.tenant_id === null ? {} : { tenantId: row.tenant_id }),
          payload: row.payload as DispatchTask['payload'],
        },
        taskQueue: row.task_queue,
        attempts: row.attempts,
      }));
    },

    /** Marks the tasks sent (one statement per batch); rows already marked keep their first time. */
    async markDispatched(taskIds: readonly string[]): Promise<void> {
      if (taskIds.length === 0) return;
      await db('dispatch_outbox')
        .whereIn('task_id', taskIds)
        .whereNull('dispatched_at')
        .update({ dispatched_at: db.fn.now(), attempts: db.raw('attempts + 1') });
    },

    /** Counts a failed send of the tasks and keeps the error's message for ops. */
    async recordFailure(taskIds: readonly string[], message: string): Promise<void> {
      if (taskIds.length === 0) return;
      await db('dispatch_outbox')
        .whereIn('task_id', taskIds)
        .whereNull('dispatched_at')
        .update({ attempts: db.raw('attempts + 1'), last_error: message.slice(0, MAX_ERROR_LENGTH) });
    },

    /** Deletes up to `limit` rows dispatched more than `olderThanSeconds` ago; returns how many. */
    async pruneDispatched(olderThanSeconds: number, limit = 10_000): Promise<number> {
      const result = await db.raw<{ rowCount: number }>(
        `DELETE FROM dispatch_outbox WHERE task_id IN (
           SELECT task_id FROM dispatch_outbox
           WHERE dispatched_at IS NOT NULL AND dispatched_at < now() - make_interval(secs => ?)
           LIMIT ?)`,
        [olderThanSeconds, limit],
      );
      return result.rowCount;
    },

    /** Undispatched rows and the age of the oldest (the outbox gauges). */
    async stats(): Promise<{ depth: number; oldestSeconds: number }> {
      const row: unknown = await db('dispatch_outbox')
        .whereNull('dispatched_at')
        .first(db.raw('count(*)::int AS depth'), db.raw('coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest'));
      const { depth, oldest } = (row ?? { depth: 0, oldest: 0 }) as { depth: number; oldest: number };
      return { depth, oldestSeconds: Math.max(0, oldest) };
    },

    /** One row's dispatch state (tests, ops). */
    async find(taskId: string): Promise<{ dispatchedAt: Date | null; attempts: number; lastError: string | null } | undefined> {
      const row = await db<{ task_id: string; dispatched_at: Date | null; attempts: number; last_error: string | null }>('dispatch_outbox')
        .where({ task_id: taskId })
        .first('dispatched_at', 'attempts', 'last_error');
      return row ? { dispatchedAt: row.dispatched_at, attempts: row.attempts, lastError: row.last_error } : undefined;
    },
  };
}

export type OutboxRepository = ReturnType<typeof createOutboxRepository>;
