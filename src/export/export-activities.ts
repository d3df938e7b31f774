/**
 * The usage export as the maintenance activities run it (src/activities/maintenance-jobs.ts):
 * the exporter on the configured destinations, heartbeating between batches so a worker
 * that dies mid-run is noticed within the heartbeat timeout (the retry resends what was not
 * acknowledged; the destinations dedupe).
 */
import { Context } from '@temporalio/activity';
import type { Config } from '../config';
import type { Logger } from '../log';
import type { BillingMetrics } from '../metrics';
import { exportDestinationsFromConfig, exporterSettingsFromConfig } from './export-config';
import type { ExportRepository, ReconciliationResult } from './export-repository';
import { resolveExportDestinations, type ExportSettingsRepository } from './export-settings';
import { createUsageExporter, type ExportRunSummary } from './usage-exporter';

function heartbeat(): void {
  try {
    Context.current().heartbeat();
  } catch {
    // Not inside an activity (a direct call): nothing to heartbeat.
  }
}

export interface UsageExportActivityDeps {
  config: Readonly<Config>;
  repository: ExportRepository;
  /** Admin-set destinations (PUT /admin/exports/:destination), read at every run; without it, the environment's only. */
  settings?: Pick<ExportSettingsRepository, 'readAll'>;
  metrics: Pick<BillingMetrics, 'usageExportSent'>;
  log: Logger;
}

export function createUsageExportActivities(deps: UsageExportActivityDeps) {
  // Built per run: an admin change of a destination reaches the next run of every worker.
  const exporter = async () => createUsageExporter({
    repository: deps.repository,
    destinations: deps.settings ? await resolveExportDestinations(deps.config, deps.settings) : exportDestinationsFromConfig(deps.config),
    settings: exporterSettingsFromConfig(deps.config),
    counters: { sent: (destination, result, n) => void (n > 0 && deps.metrics.usageExportSent.inc({ destination, result }, n)) },
    log: deps.log,
    heartbeat,
  });
  return {
    exportUsage: async (): Promise<ExportRunSummary> => (await exporter()).run(),
    reconcileUsageExport: async (day?: string): Promise<ReconciliationResult[]> => (await exporter()).reconcile(day),
  };
}
