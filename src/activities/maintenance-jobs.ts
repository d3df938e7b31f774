/**
 * The maintenance jobs as Temporal activities: each run is timed, counted by outcome and
 * recorded in sync_run (the run history the sync-lag metric reads), whatever worker runs it.
 */
import type { SyncRunRepository } from '../db/sync-run-repository';
import type { Logger } from '../log';
import type { MaintenanceMetrics } from '../metrics';
import type { CounterSync, SyncScope } from '../sync/counter-sync';
import type { MaintenanceJob } from '../workflows/maintenance-jobs';

export interface MaintenanceDeps {
  counterSync: CounterSync;
  syncRuns: Pick<SyncRunRepository, 'record'>;
  maintenanceMetrics: MaintenanceMetrics;
  log: Logger;
}

/** What every job result may tell the run history. */
interface JobFigures {
  subjects?: number;
  written?: number;
}

export function createMaintenanceActivities(deps: MaintenanceDeps) {
  async function recorded<T extends JobFigures>(job: MaintenanceJob, run: () => Promise<T>): Promise<T> {
    const startedAt = new Date();
    const stopTimer = deps.maintenanceMetrics.duration.startTimer({ task: job });
    try {
      const result = await run();
      stopTimer();
      deps.maintenanceMetrics.runs.inc({ task: job, outcome: 'ok' });
      if (result.written) deps.maintenanceMetrics.rowsWritten.inc({ task: job }, result.written);
      await deps.syncRuns.record({ job, outcome: 'ok', startedAt, finishedAt: new Date(), subjects: result.subjects, written: result.written });
      deps.log.info({ job, result: result }, 'maintenance job done');
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

  return {
    syncTenantQuotas: (scope?: SyncScope) => recorded('quota', () => deps.counterSync.syncTenantQuotas(scope)),
    syncApiKeyBudgets: (scope?: SyncScope) => recorded('apikey', () => deps.counterSync.syncApiKeyBudgets(scope)),
  };
}

export type MaintenanceActivities = ReturnType<typeof createMaintenanceActivities>;
