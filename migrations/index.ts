/**
 * The ordered list of migrations, given to knex as a migration source so the
 * same TypeScript modules run under tsx, jest and a compiled build alike.
 */
import type { Knex } from 'knex';
import * as tenantQuota from './20261126000001_tenant_quota';
import * as apiKeyQuota from './20261126000002_api_key_quota';
import * as modelPrice from './20261126000003_model_price';
import * as billingTransaction from './20261126000004_billing_transaction';
import * as rateLimits from './20261201000001_rate_limits';
import * as requestBody from './20261201000002_request_body';
import * as counterSync from './20261202000001_counter_sync';
import * as usageReportIndexes from './20261202000002_usage_report_indexes';
import * as consistencyReport from './20261202000010_consistency_report';
import * as dispatchOutbox from './20261202000020_dispatch_outbox';
import * as alertSettings from './20261202000021_alert_settings';
import * as budgetAlerts from './20261202000022_budget_alerts';
import * as budgetWindows from './20261202000040_budget_windows';
import * as usageExport from './20261202000050_usage_export';
import * as usageExportSettings from './20261202000051_usage_export_settings';
import * as upstreamChannel from './20261202000060_upstream_channel';
import * as conversation from './20261202000070_conversation';
import * as ledgerOperation from './20261201140000_ledger_operation';

const MIGRATIONS: ReadonlyArray<readonly [string, Knex.Migration]> = [
  ['20261126000001_tenant_quota', tenantQuota],
  ['20261126000002_api_key_quota', apiKeyQuota],
  ['20261126000003_model_price', modelPrice],
  ['20261126000004_billing_transaction', billingTransaction],
  ['20261201000001_rate_limits', rateLimits],
  ['20261201000002_request_body', requestBody],
  ['20261202000001_counter_sync', counterSync],
  ['20261202000002_usage_report_indexes', usageReportIndexes],
  ['20261202000010_consistency_report', consistencyReport],
  ['20261202000020_dispatch_outbox', dispatchOutbox],
  ['20261202000021_alert_settings', alertSettings],
  ['20261202000022_budget_alerts', budgetAlerts],
  ['20261202000040_budget_windows', budgetWindows],
  ['20261202000050_usage_export', usageExport],
  ['20261202000051_usage_export_settings', usageExportSettings],
  ['20261202000060_upstream_channel', upstreamChannel],
  ['20261202000070_conversation', conversation],
  // Listed in the order applied, after the migrations that existed when it was written.
  ['20261201140000_ledger_operation', ledgerOperation],
];

export const migrationSource: Knex.MigrationSource<readonly [string, Knex.Migration]> = {
  getMigrations: () => Promise.resolve([...MIGRATIONS]),
  getMigrationName: ([name]) => name,
  getMigration: ([, migration]) => Promise.resolve(migration),
};

export const MIGRATION_NAMES = MIGRATIONS.map(([name]) => name);
