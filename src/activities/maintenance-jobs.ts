/**
 * The maintenance jobs as Temporal activities: each run is timed, counted by outcome and
 * recorded in sync_run (the run history the sync-lag metric reads), whatever worker runs it.
 * The jobs themselves live with their concept (src/sync, src/sweeper, ...); this file only
 * gives them one way of being run and recorded.
 */
import type { SyncRunRepository } from '../db/sync-run-repository';
import type { Logger } from '../log';
import type { MaintenanceMetrics } from '../metrics';
import type { ConsistencyCheck } from '../consistency/consistency-check';
import type { ConsistencyRunSummary } from '../consistency/report';
import type { DispatchReport } from '../dispatch/dispatcher';
import type { ReconciliationResult } from '../export/export-repository';
import type { ExportRunSummary } from '../export/usage-exporter';
import type { SweepSummary } from '../sweeper/reservation-sweeper';
import type { CounterSync, SyncScope } from '../sync/counter-sync';
import type { MaintenanceJob } from '../workflows/maintenance-jobs';

export interface MaintenanceDeps {
  counterSync: CounterSync;
  consistencyCheck: Pick<ConsistencyCheck, 'run'>;
  /** The sweeper's activity (src/sweeper/sweep-activity.ts): heartbeats and honours cancellation. */
  sweepPendingReservations: () => Promise<SweepSummary>;
  /** The dispatcher's drain (src/dispatch/activities.ts): sends what a crash left in the outbox; heartbeats per batch. */
  drainOutbox: () => Promise<DispatchReport>;
  /** The usage export (src/export/): one run over every destination; heartbeats per batch. */
  exportUsage: () => Promise<ExportRunSummary>;
  /** Its daily reconciliation of one UTC day (default yesterday). */
  reconcileUsageExport: (day?: string) => Promise<ReconciliationResult[]>;
  syncRuns: Pick<SyncRunRepository, 'record'>;
  maintenanceMetrics: MaintenanceMetrics;
  log: Logger;
}

/** What a run tells the run history: subjects looked at and rows written (or settled). */
interface JobFigures {
  subjects: number;
  written: number;
}

export function createMaintenanceActivities(deps: MaintenanceDeps) {
  async function recorded<T>(job: MaintenanceJob, run: () => Promise<T>, figures: (result: T) => JobFigures): Promise<T> {
    const startedAt = new Date();
    const stopTimer = deps.maintenanceMetrics.duration.startTimer({ task: job });
    try {
      const result = await run();
      stopTimer();
      const { subjects, written } = figures(result);
      deps.maintenanceMetrics.runs.inc({ task: job, outcome: 'ok' });
      if (written > 0 && (job === 'quota' || job === 'apikey')) deps.maintenanceMetrics.rowsWritten.inc({ task: job }, written);
      await deps.syncRuns.record({ job, outcome: 'ok', startedAt, finishedAt: new Date(), subjects, written });
      deps.log.info({ job, result: result as object }, 'maintenance job done');
      return result;
    } catch (err) {
      stopTimer();
      deps.maintenanceMetrics.runs.inc({ task: job, outcome: 'error' });
      const message = (err as Error).message;
      await deps.syncRuns.record({ job, outcome: 'error', startedAt, finishedAt: new Date(), error: message }).catch(() => undefined);
      deps.log.error({ job, err: message }, 'maintenance job failed');
      throw err;
    }
  }

  const syncFigures = (r: { subjects: number; written: number }): JobFigures => ({ subjects: r.subjects, written: r.written });

  return {
    syncTenantQuotas: (scope?: SyncScope) => recorded('quota', () => deps.counterSync.syncTenantQuotas(scope), syncFigures),
    syncApiKeyBudgets: (scope?: SyncScope) => recorded('apikey', () => deps.counterSync.syncApiKeyBudgets(scope), syncFigures),
    /** The consistency check (M4.3); its summary says whether a sync should follow a heal (M4.5). */
    checkConsistency: (): Promise<ConsistencyRunSummary> =>
      recorded('consistency', () => deps.consistencyCheck.run(), (r) => ({ subjects: r.tenantsChecked + r.keysChecked, written: r.heals + r.rebuilt })),
    sweepPendingReservations: () =>
      recorded('sweep', deps.sweepPendingReservations, (s) => ({ subjects: s.examined, written: s.committed + s.voided + s.expiredBodiesDeleted + (s.expiredMessagesDeleted ?? 0) })),
    drainOutbox: () =>
      recorded('outbox', deps.drainOutbox, (r) => ({ subjects: r.started + r.duplicates + r.failed, written: r.started + r.duplicates })),
    exportUsage: () =>
      recorded('export', deps.exportUsage, (r) => ({ subjects: r.destinations.length, written: r.destinations.reduce((n, d) => n + d.delivered + d.duplicates, 0) })),
    reconcileUsageExport: (day?: string) =>
      recorded('export_reconcile', () => deps.reconcileUsageExport(day), (r) => ({ subjects: r.length, written: r.reduce((n, d) => n + d.missing + d.unexpected + d.held, 0) })),
  };
}

export type MaintenanceActivities = ReturnType<typeof createMaintenanceActivities>;
