/**
 * A worker's follow-up machinery, built once from the settings: the transaction-aware
 * dispatcher (M5) on the worker's Temporal client, and the budget alerts that raise
 * their alerts through it. src/roles/worker.ts hands both to the activities.
 */
import type { Client } from '@temporalio/client';
import type { Knex } from 'knex';
import type { Redis } from '../redis/client';
import { createBudgetAlerts } from '../alerts/budget-alerts';
import type { Config } from '../config';
import type { Repositories } from '../db/repositories';
import type { Logger } from '../log';
import type { BillingMetrics } from '../metrics';
import type { AlertDeliveryPolicy } from '../workflows/budget-alert-definitions';
import { createDispatcher } from './dispatcher';

export interface FollowUpDeps {
  config: Readonly<Config>;
  db: Knex;
  redis: Redis;
  repositories: Pick<Repositories, 'alerts' | 'outbox'>;
  /** A Temporal client (the worker's, on its NativeConnection) that starts the follow-up workflows. */
  client: Pick<Client, 'workflow'>;
  /** Where the follow-up workflows run: the worker's own task queue. */
  taskQueue: string;
  metrics: BillingMetrics;
  log: Logger;
}

/** The retry policy of webhook deliveries, from the ALERT_* settings. */
export function alertDeliveryPolicy(config: Readonly<Config>): AlertDeliveryPolicy {
  return {
    initialIntervalMs: config.ALERT_RETRY_INITIAL_SECONDS * 1000,
    maximumIntervalMs: config.ALERT_RETRY_MAX_INTERVAL_SECONDS * 1000,
    giveUpAfterMs: config.ALERT_DELIVERY_GIVE_UP_SECONDS * 1000,
    attemptTimeoutMs: config.ALERT_WEBHOOK_TIMEOUT_SECONDS * 1000,
  };
}

export function createFollowUps(deps: FollowUpDeps) {
  const { config } = deps;
  const dispatcher = createDispatcher({
    db: deps.db,
    outbox: deps.repositories.outbox,
    client: deps.client,
    taskQueue: deps.taskQueue,
    metrics: deps.metrics,
    log: deps.log,
    batchSize: config.DISPATCH_BATCH_SIZE,
    drainMinAgeSeconds: config.DISPATCH_DRAIN_MIN_AGE_SECONDS,
    retentionSeconds: config.DISPATCH_OUTBOX_RETENTION_SECONDS,
  });
  const budgetAlerts = createBudgetAlerts({
    alerts: deps.repositories.alerts,
    dispatcher,
    redis: deps.redis,
    metrics: deps.metrics,
    log: deps.log,
    delivery: alertDeliveryPolicy(config),
    settingsCacheMs: config.ALERT_SETTINGS_CACHE_SECONDS * 1000,
  });
  return { dispatcher, budgetAlerts };
}
