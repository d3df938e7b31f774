/**
 * The maintenance workflows the Schedules start (src/schedules/maintenance-schedules.ts),
 * also started by hand through `POST /admin/sync/:job`. Each is one activity: the work is
 * plain I/O (Redis pipelines, batched SQL) with nothing to orchestrate between steps, and a
 * failed run is retried a few times, then left to the next scheduled one (the jobs are
 * idempotent: a sync writes the newest figure, whichever run writes it).
 */
import { proxyActivities } from '@temporalio/workflow';
import type { MaintenanceActivities } from '../activities/maintenance-jobs';
import type { SweepSummary } from '../sweeper/reservation-sweeper';
import type { SyncRunSummary, SyncScope } from '../sync/counter-sync';

const jobs = proxyActivities<MaintenanceActivities>({
  startToCloseTimeout: '10 minutes',
  retry: { initialInterval: '5 seconds', backoffCoefficient: 2, maximumAttempts: 3 },
});

/** The sweeper heartbeats after each row: a worker that died mid-run is noticed within a minute, and the retry sweeps on. */
const sweeper = proxyActivities<MaintenanceActivities>({
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '5 seconds', backoffCoefficient: 2, maximumAttempts: 3 },
});

/** Quota sync (M4.1); `scope.tenantIds` limits it to some tenants (e.g. after a top-up, M4.5). */
export async function quotaSyncWorkflow(scope: SyncScope = {}): Promise<SyncRunSummary> {
  return jobs.syncTenantQuotas(scope);
}

/** API-key sync (M4.2); `scope.tenantIds` limits it to those tenants' keys. */
export async function apiKeySyncWorkflow(scope: SyncScope = {}): Promise<SyncRunSummary> {
  return jobs.syncApiKeyBudgets(scope);
}

/** The sweeper: ends pending reservations whose workflow no longer runs, deletes expired bodies. */
export async function reservationSweepWorkflow(): Promise<SweepSummary> {
  return sweeper.sweepPendingReservations();
}
