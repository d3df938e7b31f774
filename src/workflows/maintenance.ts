/**
 * The maintenance workflows the Schedules start (src/schedules/maintenance-schedules.ts),
 * also started by hand through `POST /admin/sync/:job`. Each is one activity: the work is
 * plain I/O (Redis pipelines, batched SQL) with nothing to orchestrate between steps, and a
 * failed run is retried a few times, then left to the next scheduled one (the jobs are
 * idempotent: a sync writes the newest figure, whichever run writes it).
 */
import { proxyActivities } from '@temporalio/workflow';
import type { MaintenanceActivities } from '../activities/maintenance-jobs';
import type { ConsistencyRunSummary } from '../consistency/report';
import type { DispatchReport } from '../dispatch/dispatcher';
import type { ExportRunSummary } from '../export/usage-exporter';
import type { ReconciliationResult } from '../export/export-repository';
import type { SweepSummary } from '../sweeper/reservation-sweeper';
import type { SyncRunSummary, SyncScope } from '../sync/counter-sync';

const jobs = proxyActivities<MaintenanceActivities>({
  startToCloseTimeout: '10 minutes',
  retry: { initialInterval: '5 seconds', backoffCoefficient: 2, maximumAttempts: 3 },
});

/** The sweeper and the outbox drain heartbeat as they go: a worker that died mid-run is noticed within a minute, and the retry goes on. */
const heartbeating = proxyActivities<MaintenanceActivities>({
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

/**
 * The consistency check (M4.3). When it healed or rebuilt a counter, both syncs run at once
 * (M4.5: a sync when drift passes the threshold), so the synced tables show the healed figures
 * now rather than one period later.
 */
export async function consistencyCheckWorkflow(): Promise<ConsistencyRunSummary> {
  const summary = await jobs.checkConsistency();
  if (summary.syncNeeded) {
    await jobs.syncTenantQuotas({});
    await jobs.syncApiKeyBudgets({});
  }
  return summary;
}

/** The sweeper: ends pending reservations whose workflow no longer runs, deletes expired bodies. */
export async function reservationSweepWorkflow(): Promise<SweepSummary> {
  return heartbeating.sweepPendingReservations();
}

/** The outbox drain (M5): sends follow-up tasks whose transaction committed but whose start was lost. */
export async function outboxDrainWorkflow(): Promise<DispatchReport> {
  return heartbeating.drainOutbox();
}

/**
 * The usage export (docs/usage-export.md): one run per period sends every configured
 * destination what it has not acknowledged. The destinations run side by side inside the
 * activity, each with its own backoff and place kept in PostgreSQL, so a destination that is
 * down fails only its own part of the run (the run itself succeeds) and never holds up the others.
 */
export async function usageExportWorkflow(): Promise<ExportRunSummary> {
  return heartbeating.exportUsage();
}

/** The daily reconciliation of the usage export; `day` (YYYY-MM-DD, UTC) defaults to yesterday. */
export async function usageExportReconcileWorkflow(scope: { day?: string } = {}): Promise<ReconciliationResult[]> {
  return jobs.reconcileUsageExport(scope.day);
}
