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
import { createUsageExporter, type ExportRunSummary } from './usage-exporter';

function heartbeat(): void {
  try {
    Context.current().heartbeat();
  } catch {
    // Not inside an activity (a direct call): nothing to heartbeat.
  }
}

export function createUsageExportActivities(deps: { config: Readonly<Config>; repository: ExportRepository; metrics: Pick<BillingMetrics, 'usageExportSent'>; log: Logger }) {
  const exporter = createUsageExporter({
    repository: deps.repository,
    destinations: exportDestinationsFromConfig(deps.config),
    settings: exporterSettingsFromConfig(deps.config),
    counters: { sent: (destination, result, n) => void (n > 0 && deps.metrics.usageExportSent.inc({ destination, result }, n)) },
    log: deps.log,
    heartbeat,
  });
  return {
    exportUsage: (): Promise<ExportRunSummary> => exporter.run(),
    reconcileUsageExport: (day?: string): Promise<ReconciliationResult[]> => exporter.reconcile(day),
  };
}
