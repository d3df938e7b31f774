/**
 * The run history of the scheduled maintenance jobs (sync_run): one row per run, kept for
 * operators ("when did the quota sync last succeed, and how much did it write?") and read
 * by the sync-lag metric, so every process reports the same lag whichever worker ran it.
 */
import type { Knex } from 'knex';

export interface SyncRunRecord {
  job: string;
  outcome: 'ok' | 'error';
  startedAt: Date;
  finishedAt: Date;
  subjects?: number;
  written?: number;
  /** A short error message (no payloads: job errors carry ids at most). */
  error?: string;
}

export function createSyncRunRepository(db: Knex) {
  return {
    async record(run: SyncRunRecord): Promise<void> {
      await db('sync_run').insert({
        job: run.job,
        outcome: run.outcome,
        started_at: run.startedAt,
        finished_at: run.finishedAt,
        subjects: run.subjects ?? 0,
        written: run.written ?? 0,
        error: run.error?.slice(0, 500) ?? null,
      });
    },

    /** Start of the last successful run of each job (index sync_run_job_started_idx). */
    async lastSuccessByJob(): Promise<Partial<Record<string, Date>>> {
      const rows = await db('sync_run').where({ outcome: 'ok' }).groupBy('job').select('job').max({ started_at: 'started_at' });
      return Object.fromEntries((rows as Array<{ job: string; started_at: Date }>).map((r) => [r.job, r.started_at]));
    },

    /** The newest runs first, for operators and tests. */
    async recent(job: string, limit = 20): Promise<SyncRunRecord[]> {
      const rows = await db('sync_run').where({ job }).orderBy('id', 'desc').limit(limit);
      return rows.map((r: { job: string; outcome: 'ok' | 'error'; started_at: Date; finished_at: Date; subjects: number; written: number; error: string | null }) => ({
        job: r.job, outcome: r.outcome, startedAt: r.started_at, finishedAt: r.finished_at, subjects: r.subjects, written: r.written, ...(r.error ? { error: r.error } : {}),
      }));
    },
  };
}

export type SyncRunRepository = ReturnType<typeof createSyncRunRepository>;
