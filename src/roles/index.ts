/**
 * Starts the application roles on given endpoints: migrations, the Temporal
 * worker and the Express API. Used by `npm start` and by end-to-end tests.
 */
import http, { type Server } from 'node:http';
import { Client, Connection } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { Config } from '../config';
import type { Logger } from '../log';
import type { StackEndpoints } from '../embedded';
import { createApiApp } from '../api/app';
import { createDb } from '../db/knex';
import { migrateLatest } from '../db/migrate';
import { createModelPriceRepository } from '../db/model-price-repository';
import { applyPriceCatalogue } from '../billing/catalogue/price-catalogue';
import { createRepositories } from '../db/repositories';
import { createBillingMetrics, createLockMetrics, createMaintenanceMetrics } from '../metrics';
import { createDistributedLock } from '../locks/distributed-lock';
import { createScriptRunner } from '../redis/script-runner';
import { createCounterSync } from '../sync/counter-sync';
import { consistencySettings, createConsistencyCheck } from '../consistency/consistency-check';
import { createBudgetWindowCheck } from '../consistency/budget-window-check';
import { ensureMaintenanceSchedules } from '../schedules/maintenance-schedules';
import { createMaintenanceClient } from '../schedules/maintenance-client';
import { createRedis, duplicateRedis, type Redis } from '../redis/client';
import { createRequestRelay } from '../redis/request-relay';
import { createEdgeScripts } from '../redis/edge-scripts';
import { createQuotaWarmup } from '../redis/quota-warmup';
import { createQuotaScripts } from '../redis/scripts';
import { createBilledRequestClient } from '../workflows/client';
import { billingDataConverter } from '../codec/data-converter';
import { AesGcmPayloadCodec } from '../codec/payload-codec';
import { createBillingWorker } from './worker';
import { ShutdownList } from '../shutdown';
import { configuredDestinationNames } from '../export/export-settings';
import { usageExportSnapshot } from '../export/export-repository';

export interface RoleOptions {
  api: boolean;
  worker: boolean;
  /** Base URL (…/v1) of the default upstream channel. */
  upstreamBaseUrl: string;
  /** API port; 0 picks a free one (tests). @default config.API_PORT */
  apiPort?: number;
  /** Serve the worker's /metrics on WORKER_METRICS_PORT (a worker-only process). */
  workerMetrics?: boolean;
  /** Test overrides. */
  taskQueue?: string;
  pollIntervalMs?: number;
}

export interface RunningRoles {
  urls: string[];
  apiUrl?: string;
  worker?: Worker;
  stop(): Promise<void>;
}

function listen(server: Server, port: number, host: string, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'EADDRINUSE' ? new Error(`port ${port} (${what}) is already in use`) : err),
    );
    server.listen(port, host, () => {
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    });
  });
}

export async function startRoles(
  config: Readonly<Config>,
  endpoints: StackEndpoints,
  opts: RoleOptions,
  log: Logger,
): Promise<RunningRoles> {
  const stops = new ShutdownList(log);
  const stop = (): Promise<void> => stops.stopAll();
  const urls: string[] = [];
  const running: RunningRoles = { urls, stop };
  try {
    const db = createDb(endpoints.databaseUrl, { max: 20 }, log);
    stops.push(() => db.destroy());
    const applied = await migrateLatest(db);
    if (applied.length > 0) log.info({ applied }, 'migrations applied');
    // The price catalogue (issue 11): well-known models priced from the first start; never over an operator's price.
    const catalogue = await applyPriceCatalogue(createModelPriceRepository(db));
    if (catalogue.written.length > 0) log.info({ version: catalogue.version, written: catalogue.written.length }, 'price catalogue applied');

    const redis = createRedis(endpoints.redisUrl);
    redis.on('error', (err: Error) => log.debug({ err: err.message }, 'redis connection error'));
    stops.push(() => {
      redis.disconnect();
      return Promise.resolve();
    });
    const relay = createRequestRelay(redis, { ttlSeconds: config.RELAY_TTL_SECONDS });
    stops.push(() => relay.close());
    /** The conversation lock's pub/sub connection (waiters wake on release), closed with the rest. */
    const lockSubscriber = (): Redis => {
      // Offline queue on: a SUBSCRIBE sent before the connection (on a cluster, the slot map) is ready waits for it.
      const subscriber = duplicateRedis(redis, { enableOfflineQueue: true });
      subscriber.on('error', (err: Error) => log.debug({ err: err.message }, 'redis lock subscriber error'));
      stops.push(() => {
        subscriber.disconnect();
        return Promise.resolve();
      });
      return subscriber;
    };
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    // Built once and shared by both roles of this process.
    const repositories = createRepositories(db, { bodyKeys: config.payloadCodecKeys });
    const scripts = createQuotaScripts(redis, { ttlSeconds: config.RESERVATION_TTL_SECONDS, registry });
    const metrics = createBillingMetrics(registry, {
      pending: () => repositories.billing.pendingSummary(),
      consistency: () => repositories.consistencyReports.latestCompleted(),
      outbox: () => repositories.outbox.stats(),
      usageExport: usageExportSnapshot(repositories.usageExport, () => configuredDestinationNames(config, repositories.usageExportSettings)),
    });
    const { tenants, apiKeys, billing: ledger } = repositories;
    const warmup = createQuotaWarmup({ scripts, tenants, apiKeys, ledger });
    const maintenanceMetrics = createMaintenanceMetrics(registry, { lastRuns: () => repositories.syncRuns.lastSuccessByJob() });
    const taskQueue = opts.taskQueue ?? config.TEMPORAL_TASK_QUEUE;
    // The conversation lock, one per process: the worker's appends wait on it (woken on release through
    // the subscriber), the API's /admin/locks inspects and releases it.
    const locks = createDistributedLock({
      redis, run: createScriptRunner(redis, registry), metrics: createLockMetrics(registry), log,
      ...(opts.worker ? { subscriber: lockSubscriber() } : {}),
    });

    if (opts.worker) {
      const { worker, connection, client: workerClient } = await createBillingWorker({
        config, temporalAddress: endpoints.temporalAddress, db, redis, repositories, scripts, warmup, relay, metrics, log,
        locks,
        maintenanceMetrics, counterSync: createCounterSync(db, redis),
        consistencyCheck: createConsistencyCheck({
          ledger: repositories.consistencyLedger, reports: repositories.consistencyReports, redis, scripts, metrics, log,
          settings: consistencySettings(config),
          budgetWindows: createBudgetWindowCheck({ db, redis, confirmGraceMs: config.CONSISTENCY_CONFIRM_GRACE_MS }),
        }),
        upstreamBaseUrl: opts.upstreamBaseUrl, taskQueue, pollIntervalMs: opts.pollIntervalMs,
      });
      const run = worker.run();
      stops.push(async () => {
        if (worker.getState() === 'RUNNING') worker.shutdown();
        await run;
        await connection.close();
      });
      running.worker = worker;
      log.info({ taskQueue }, 'worker started');
      if (config.MAINTENANCE_SCHEDULES) {
        await ensureMaintenanceSchedules(workerClient, {
          taskQueue,
          periodsSeconds: {
            quota: config.QUOTA_SYNC_INTERVAL_SECONDS,
            apikey: config.APIKEY_SYNC_INTERVAL_SECONDS,
            consistency: config.CONSISTENCY_CHECK_INTERVAL_SECONDS,
            sweep: config.RESERVATION_SWEEP_INTERVAL_SECONDS,
            outbox: config.OUTBOX_DRAIN_INTERVAL_SECONDS,
            export: config.USAGE_EXPORT_INTERVAL_SECONDS,
            export_reconcile: config.USAGE_EXPORT_RECONCILE_INTERVAL_SECONDS,
          },
          log,
        });
      }
      if (opts.workerMetrics) {
        const server = http.createServer((req, res) => {
          if (req.url !== '/metrics') return void res.writeHead(404).end();
          registry.metrics().then(
            (text) => res.writeHead(200, { 'Content-Type': registry.contentType }).end(text),
            () => res.writeHead(500).end(),
          );
        });
        await listen(server, config.WORKER_METRICS_PORT, config.API_HOST, 'worker metrics');
        stops.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
        urls.push(`worker metrics      http://${config.API_HOST}:${config.WORKER_METRICS_PORT}/metrics`);
      }
    }

    if (opts.api) {
      const temporal = await Connection.connect({ address: endpoints.temporalAddress });
      stops.push(() => temporal.close());
      // The same codec as the worker: workflow inputs (the prompt) and update results are encrypted before they leave.
      const client = new Client({ connection: temporal, namespace: config.TEMPORAL_NAMESPACE, dataConverter: billingDataConverter(config.payloadCodecKeys) });
      const workflows = createBilledRequestClient(client, taskQueue);
      const app = createApiApp({
        locks,
        config, db, redis, temporal, workflows, relay, repositories, scripts, edgeScripts: createEdgeScripts(redis, { registry }), warmup, registry, metrics, log,
        payloadCodec: new AesGcmPayloadCodec(config.payloadCodecKeys),
        maintenance: createMaintenanceClient(client, taskQueue),
      });
      const server = http.createServer(app);
      server.keepAliveTimeout = 65_000;
      const port = await listen(server, opts.apiPort ?? config.API_PORT, config.API_HOST, 'API');
      stops.push(() => new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }));
      running.apiUrl = `http://${config.API_HOST}:${port}`;
      urls.push(`API                 ${running.apiUrl}  (/v1/chat/completions, /admin, /readyz, /metrics)`);
      urls.push(`codec sign-in       ${running.apiUrl}/codec/login  (lets this browser's Web UI decode payloads)`);
    }
    return running;
  } catch (err) {
    await stop();
    throw err;
  }
}
