/**
 * Every repository on one database handle, built once at start-up (src/roles) and
 * handed to the services and activities that need them.
 */
import type { Knex } from 'knex';
import type { CodecKeyring } from '../codec/keyring';
import { createConsistencyLedger } from '../consistency/ledger-figures';
import { createConsistencyReportRepository } from '../consistency/report-repository';
import { createAlertRepository } from '../alerts/alert-repository';
import { createAlertSecretRepository } from '../alerts/alert-secrets';
import { createOutboxRepository } from '../dispatch/outbox-repository';
import { createChannelRepository } from '../channels/channel-repository';
import { createExportRepository } from '../export/export-repository';
import { createExportSettingsRepository } from '../export/export-settings';
import { createApiKeyRepository } from './api-key-repository';
import { createBillingRepository } from './billing-repository';
import { createBudgetWindowRepository } from './budget-window-repository';
import { createConversationRepository } from './conversation-repository';
import { createModelPriceRepository } from './model-price-repository';
import { createRequestBodyRepository } from './request-body-repository';
import { createSyncRunRepository } from './sync-run-repository';
import { createUsageReportRepository } from './usage-report-repository';
import { createTenantRepository } from './tenant-repository';

/** `bodyKeys`: the payload codec's keys, which also encrypt the body store and the alert signing secrets. */
export function createRepositories(db: Knex, opts: { bodyKeys: CodecKeyring }) {
  return {
    tenants: createTenantRepository(db),
    apiKeys: createApiKeyRepository(db),
    modelPrices: createModelPriceRepository(db),
    /** The ledger (billing_transaction). */
    billing: createBillingRepository(db),
    /** Request bodies and relayed outputs, out of Temporal history (request_body). */
    requestBodies: createRequestBodyRepository(db, opts.bodyKeys),
    /** Runs of the scheduled maintenance jobs (sync_run). */
    syncRuns: createSyncRunRepository(db),
    /** Spend reports over the ledger's committed usage. */
    usageReports: createUsageReportRepository(db),
    /** The consistency check's set-based ledger reads (M4.3). */
    consistencyLedger: createConsistencyLedger(db),
    /** Consistency check runs (consistency_report). */
    consistencyReports: createConsistencyReportRepository(db),
    /** Budget alert state and records (budget_alert_state, budget_alert). */
    alerts: createAlertRepository(db),
    /** Tenants' webhook signing secrets, encrypted (tenant_quota). */
    alertSecrets: createAlertSecretRepository(db, opts.bodyKeys),
    /** Conversations and their messages, encrypted (conversation, conversation_message; M7). */
    conversations: createConversationRepository(db, opts.bodyKeys),
    /** Follow-up tasks committed, waiting to be (or sent as) workflow starts (dispatch_outbox). */
    outbox: createOutboxRepository(db),
    /** Upstream channels, their API keys encrypted (upstream_channel). */
    channels: createChannelRepository(db, opts.bodyKeys),
    /** Budget window caps of tenants and keys (budget_window) and a window's ledger spend (docs/budget-windows.md). */
    budgetWindows: createBudgetWindowRepository(db),
    /** The usage export's outbox, per-destination deliveries, backoff and reconciliation (docs/usage-export.md). */
    usageExport: createExportRepository(db),
    /** Usage-export destinations set through the admin API, credentials encrypted (usage_export_setting). */
    usageExportSettings: createExportSettingsRepository(db, opts.bodyKeys),
  };
}

export type Repositories = ReturnType<typeof createRepositories>;
