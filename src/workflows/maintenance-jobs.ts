/**
 * The scheduled maintenance jobs (M4): one name per job, used by the admin API
 * (`POST /admin/sync/:job`), the Schedules created at worker start and the metrics'
 * `job` label. Plain data, so the workflow bundle may import it too.
 */
export const MAINTENANCE_JOBS = {
  /** Quota sync (M4.1): Redis used_micros -> tenant_quota. */
  quota: { scheduleId: 'quota-sync', workflowType: 'quotaSyncWorkflow' },
  /** API-key sync (M4.2): Redis spent_micros -> api_key_quota. */
  apikey: { scheduleId: 'apikey-sync', workflowType: 'apiKeySyncWorkflow' },
  /** The consistency check (M4.3): Redis vs the synced tables vs the ledger; heals confirmed drift. */
  consistency: { scheduleId: 'consistency-check', workflowType: 'consistencyCheckWorkflow' },
  /** The sweeper (docs/sweeper.md): pending reservations whose workflow no longer runs, and expired bodies. */
  sweep: { scheduleId: 'reservation-sweep', workflowType: 'reservationSweepWorkflow' },
  /** The outbox drain (M5, docs/alerts.md): follow-up tasks committed but not sent, e.g. after a crash. */
  outbox: { scheduleId: 'outbox-drain', workflowType: 'outboxDrainWorkflow' },
  /** The usage export (docs/usage-export.md): committed ledger entries to OpenMeter, Lago, Stripe, the webhook. */
  export: { scheduleId: 'usage-export', workflowType: 'usageExportWorkflow' },
  /** The usage export's daily reconciliation: what each destination acknowledged vs the ledger's day. */
  export_reconcile: { scheduleId: 'usage-export-reconcile', workflowType: 'usageExportReconcileWorkflow' },
} as const;

export type MaintenanceJob = keyof typeof MAINTENANCE_JOBS;

export const MAINTENANCE_JOB_NAMES = Object.keys(MAINTENANCE_JOBS) as MaintenanceJob[];

export function isMaintenanceJob(name: string): name is MaintenanceJob {
  return Object.prototype.hasOwnProperty.call(MAINTENANCE_JOBS, name);
}
