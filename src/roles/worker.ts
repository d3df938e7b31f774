/** The Temporal worker: the billed-request workflow and its activities on one task queue. */
import { Client } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker, type LogLevel } from '@temporalio/worker';
import type { Knex } from 'knex';
import type { Redis } from '../redis/client';
import type { Config } from '../config';
import type { Repositories } from '../db/repositories';
import type { Logger } from '../log';
import { createActivities } from '../activities';
// Built at import (M9.3): two context fields claiming one key stop the worker here, at start-up, not at a request's first workflow task.
import '../workflows/billed-request-context';
import { createMaintenanceActivities } from '../activities/maintenance-jobs';
import type { CounterSync } from '../sync/counter-sync';
import type { ConsistencyCheck } from '../consistency/consistency-check';
import { billingDataConverter } from '../codec/data-converter';
import type { QuotaWarmup } from '../redis/quota-warmup';
import type { BillingMetrics, MaintenanceMetrics } from '../metrics';
import type { QuotaScripts } from '../redis/scripts';
import type { RequestRelay } from '../redis/request-relay';
import type { DistributedLock } from '../locks/distributed-lock';
import { createOpenAICompatibleProvider } from '../upstream/openai-compatible';
import { createReservationSweeper, createSweeperActivities } from '../sweeper';
import { createFollowUps } from '../dispatch/follow-ups';
import { createDispatchActivities } from '../dispatch/activities';
import { createBudgetAlertActivities } from '../alerts/delivery-activities';
import { createChannelRouter } from '../channels/channel-router';
import { createChannelHealth } from '../channels/channel-health';
import { createAffinityStore } from '../routing/affinity-store';
import { createBudgetWindows } from '../services/budget-windows';
import { createUsageExportActivities } from '../export/export-activities';

export interface BillingWorkerOptions {
  config: Readonly<Config>;
  temporalAddress: string;
  /** The database handle of `repositories` (the dispatcher's transactions). */
  db: Knex;
  /** The Redis of `scripts` (budget alerts read counters there after a retried settlement). */
  redis: Redis;
  repositories: Repositories;
  scripts: QuotaScripts;
  warmup: QuotaWarmup;
  relay: RequestRelay;
  /** The conversation lock (ConversationAppendStep); without it a conversation's exchange is not appended. */
  locks?: DistributedLock;
  metrics: BillingMetrics;
  maintenanceMetrics: MaintenanceMetrics;
  counterSync: CounterSync;
  consistencyCheck: ConsistencyCheck;
  log: Logger;
  /** Base URL of the default upstream channel (…/v1). */
  upstreamBaseUrl: string;
  /** Overrides for tests (e.g. a short poll interval). */
  pollIntervalMs?: number;
  taskQueue?: string;
}

/**
 * The activities with real dependencies, as the worker registers them. `client`: a Temporal
 * client on the worker's connection with the same data converter (the sweeper describes
 * workflows and decodes their histories; follow-up workflows such as budget alerts are
 * started through it after their transaction commits, src/dispatch/).
 */
export function buildActivities(opts: Omit<BillingWorkerOptions, 'temporalAddress'> & { client: Client }) {
  // The configured upstream is the built-in default channel (issue 10: `npm start` without channels keeps the mock).
  const defaultProvider = createOpenAICompatibleProvider({ baseUrl: opts.upstreamBaseUrl });
  const router = createChannelRouter({
    channels: opts.repositories.channels,
    health: createChannelHealth(opts.redis),
    affinity: createAffinityStore(opts.redis),
    defaultProvider,
    metrics: opts.metrics,
    log: opts.log,
  });
  const { dispatcher, budgetAlerts } = createFollowUps({ ...opts, taskQueue: opts.taskQueue ?? opts.config.TEMPORAL_TASK_QUEUE });
  const billedRequest = createActivities({
    scripts: opts.scripts,
    ledger: opts.repositories.billing,
    warmup: opts.warmup,
    relay: opts.relay,
    bodies: opts.repositories.requestBodies,
    metrics: opts.metrics,
    log: opts.log,
    channels: { '*': 'default' },
    providers: { default: defaultProvider },
    router,
    pollIntervalMs: opts.pollIntervalMs,
    budgetAlerts,
    budgetWindows: createBudgetWindows({ repository: opts.repositories.budgetWindows, scripts: opts.scripts }),
    conversations: opts.repositories.conversations,
    locks: opts.locks,
    conversationLockWaitMs: opts.config.CONVERSATION_LOCK_WAIT_MS,
  });
  // Settles through the billed request's own BillingStep (docs/sweeper.md).
  const sweeper = createReservationSweeper({
    ledger: opts.repositories.billing, client: opts.client, billingStep: billedRequest.billingStep, prices: opts.repositories.modelPrices,
    relay: opts.relay, bodies: opts.repositories.requestBodies, conversations: opts.repositories.conversations, metrics: opts.metrics, log: opts.log,
    settings: { pendingAfterSeconds: opts.config.SWEEP_PENDING_AFTER_SECONDS, maxPerRun: opts.config.SWEEP_MAX_PER_RUN, conversationRetentionDays: opts.config.CONVERSATION_RETENTION_DAYS },
  });
  const maintenance = createMaintenanceActivities({
    counterSync: opts.counterSync,
    consistencyCheck: opts.consistencyCheck,
    sweepPendingReservations: createSweeperActivities(sweeper).sweepPendingReservations,
    drainOutbox: createDispatchActivities({ dispatcher }).drainOutbox,
    ...createUsageExportActivities({ config: opts.config, repository: opts.repositories.usageExport, settings: opts.repositories.usageExportSettings, metrics: opts.metrics, log: opts.log }),
    syncRuns: opts.repositories.syncRuns,
    maintenanceMetrics: opts.maintenanceMetrics,
    log: opts.log,
  });
  // The budget-alert workflow's activities (the outbox drain is a maintenance job above).
  const budgetAlertDelivery = createBudgetAlertActivities({ alerts: opts.repositories.alerts, alertSecrets: opts.repositories.alertSecrets, metrics: opts.metrics, log: opts.log });
  return { ...billedRequest, ...maintenance, ...budgetAlertDelivery };
}

const SDK_LOG_LEVELS: Record<string, LogLevel> = { trace: 'TRACE', debug: 'DEBUG', info: 'INFO', warn: 'WARN', error: 'ERROR', fatal: 'ERROR', silent: 'ERROR' };

/**
 * The SDK's own logging (workflow and activity logs) follows LOG_LEVEL; `silent` drops
 * it, the native core's included. The Runtime can be
 * installed once per process: later calls keep the first one.
 */
export function installTemporalRuntime(level: string): void {
  const silent = level === 'silent';
  const logger = silent ? new DefaultLogger('ERROR', () => undefined) : new DefaultLogger(SDK_LOG_LEVELS[level] ?? 'INFO');
  try {
    // shutdownSignals: [] — src/main.ts owns SIGINT/SIGTERM and stops the worker in order with the rest.
    // Silent: the native core's own stderr output (warnings by default) goes to the silent logger too.
    Runtime.install({ logger, shutdownSignals: [], ...(silent ? { telemetryOptions: { logging: { filter: { core: 'ERROR', other: 'ERROR' }, forward: {} } } } : {}) });
  } catch {
    // already installed (a second worker in this process)
  }
}

export async function createBillingWorker(opts: BillingWorkerOptions): Promise<{ worker: Worker; connection: NativeConnection; client: Client }> {
  installTemporalRuntime(opts.config.LOG_LEVEL);
  const connection = await NativeConnection.connect({ address: opts.temporalAddress });
  // Everything the worker writes into history is encrypted (src/codec/), failure messages included.
  const dataConverter = billingDataConverter(opts.config.payloadCodecKeys);
  // The worker's own client (no second connection), for activities that talk to Temporal.
  const client = new Client({ connection, namespace: opts.config.TEMPORAL_NAMESPACE, dataConverter });
  const worker = await Worker.create({
    connection,
    namespace: opts.config.TEMPORAL_NAMESPACE,
    taskQueue: opts.taskQueue ?? opts.config.TEMPORAL_TASK_QUEUE,
    workflowsPath: require.resolve('../workflows'),
    activities: buildActivities({ ...opts, client }),
    dataConverter,
    // Many short workflows at once: more slots and pollers than the defaults (40 / 10) cut the
    // task-queue wait under load (bench: gateway P99 overhead 4.2 s -> 2.2 s at 50 clients).
    maxConcurrentWorkflowTaskExecutions: 100,
    maxConcurrentWorkflowTaskPolls: 20,
    maxCachedWorkflows: 2000,
  });
  return { worker, connection, client };
}
