/**
 * The configured usage-export destinations, from the settings (src/config.ts,
 * USAGE_EXPORT_*): a destination is on when its URL (Stripe: its API key) is set.
 */
import type { Config } from '../config';
import { lagoDestination, openMeterDestination, stripeDestination, webhookDestination, type ExportDestination } from './destinations';
import type { ExporterSettings } from './usage-exporter';

export function exportDestinationsFromConfig(config: Readonly<Config>): ExportDestination[] {
  const timeoutMs = config.USAGE_EXPORT_TIMEOUT_SECONDS * 1000;
  const out: ExportDestination[] = [];
  if (config.USAGE_EXPORT_OPENMETER_URL !== undefined) {
    out.push(openMeterDestination({
      url: config.USAGE_EXPORT_OPENMETER_URL, token: config.USAGE_EXPORT_OPENMETER_TOKEN, source: config.USAGE_EXPORT_OPENMETER_SOURCE,
      type: config.USAGE_EXPORT_OPENMETER_TYPE, subject: config.USAGE_EXPORT_OPENMETER_SUBJECT, timeoutMs,
    }));
  }
  if (config.USAGE_EXPORT_LAGO_URL !== undefined) {
    out.push(lagoDestination({
      url: config.USAGE_EXPORT_LAGO_URL, apiKey: config.USAGE_EXPORT_LAGO_API_KEY, code: config.USAGE_EXPORT_LAGO_METRIC_CODE,
      idField: config.USAGE_EXPORT_LAGO_ID_FIELD, idFrom: config.USAGE_EXPORT_LAGO_ID_FROM, timeoutMs,
    }));
  }
  if (config.USAGE_EXPORT_STRIPE_API_KEY !== undefined) {
    out.push(stripeDestination({
      url: config.USAGE_EXPORT_STRIPE_URL, apiKey: config.USAGE_EXPORT_STRIPE_API_KEY, eventName: config.USAGE_EXPORT_STRIPE_EVENT_NAME,
      value: config.USAGE_EXPORT_STRIPE_VALUE, customers: config.USAGE_EXPORT_STRIPE_CUSTOMERS, timeoutMs,
    }));
  }
  if (config.USAGE_EXPORT_WEBHOOK_URL !== undefined && config.USAGE_EXPORT_WEBHOOK_SECRET !== undefined) {
    out.push(webhookDestination({ url: config.USAGE_EXPORT_WEBHOOK_URL, secret: config.USAGE_EXPORT_WEBHOOK_SECRET, timeoutMs }));
  }
  return out;
}

export function exporterSettingsFromConfig(config: Readonly<Config>): ExporterSettings {
  return {
    maxBatchesPerRun: config.USAGE_EXPORT_MAX_BATCHES_PER_RUN,
    batchSize: config.USAGE_EXPORT_BATCH_SIZE,
    retryInitialSeconds: config.USAGE_EXPORT_RETRY_INITIAL_SECONDS,
    retryMaxSeconds: config.USAGE_EXPORT_RETRY_MAX_SECONDS,
    // The activity's start-to-close timeout (src/workflows/maintenance.ts): a crashed run's lease lapses by itself.
    leaseSeconds: 600,
    retentionDays: config.USAGE_EXPORT_RETENTION_DAYS,
  };
}
