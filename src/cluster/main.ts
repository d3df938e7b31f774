/**
 * `npm run cluster`: the production topology on one machine (docs/cluster.md). PostgreSQL
 * (ledger and Temporal's databases), a Temporal cluster of two server processes behind a
 * frontend balancer, a Redis Cluster of three masters with a replica each, the mock upstream,
 * and the app as docker-compose.yml runs it: two API processes and two workers.
 *
 * Ports come from CLUSTER_BASE_PORT up; data lives in DATA_DIR/cluster. SIGINT/SIGTERM stop
 * everything, newest first, as `npm start` does.
 */
import path from 'node:path';
import { loadConfig, ConfigError } from '../config';
import { createLogger, type Logger } from '../log';
import { createDb } from '../db/knex';
import { migrateLatest } from '../db/migrate';
import { ShutdownList } from '../shutdown';
import { startMockUpstream } from '../upstream/mock/server';
import { CLUSTER_PORT_OFFSETS, startClusterStack } from './stack';
import { startRoleProcess } from './role-process';

let log: Logger | undefined;
let stops = new ShutdownList(undefined);
let stopping = false;

async function main(): Promise<void> {
  const config = loadConfig();
  log = createLogger(config.LOG_LEVEL, 'cluster');
  stops = new ShutdownList(log);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (stopping) process.exit(1); // a second signal: give up waiting
      stopping = true;
      log?.info({ signal }, 'shutting down');
      void stops.stopAll().then(() => process.exit(0));
    });
  }
  const base = config.CLUSTER_BASE_PORT;
  const dataDir = path.join(config.dataDir, 'cluster');
  const stack = await startClusterStack({
    rootDir: config.rootDir, dataDir, namespace: config.TEMPORAL_NAMESPACE, basePort: base, fairness: config.EMBEDDED_TEMPORAL_FAIRNESS,
  }, log);
  stops.push(stack.stop);

  // Once, before any replica starts, as compose's migrate one-shot: replicas never race on the schema.
  const db = createDb(stack.databaseUrl, {}, log);
  try {
    await migrateLatest(db);
  } finally {
    await db.destroy();
  }

  let upstreamBaseUrl = config.UPSTREAM_BASE_URL;
  if (!upstreamBaseUrl) {
    const mock = await startMockUpstream({ port: base + CLUSTER_PORT_OFFSETS.mockUpstream, host: config.API_HOST });
    stops.push(() => mock.close());
    upstreamBaseUrl = mock.url;
  }

  // Each role process reads the same settings as this one (ADMIN_TOKEN, codec keys, ...) plus the cluster's addresses.
  const roleEnv = (index: number): NodeJS.ProcessEnv => ({
    ...process.env,
    TEMPORAL_ADDRESS: stack.temporalAddress,
    REDIS_URL: stack.redisUrl,
    DATABASE_URL: stack.databaseUrl,
    UPSTREAM_BASE_URL: upstreamBaseUrl,
    API_PORT: String(base + CLUSTER_PORT_OFFSETS.api[index]!),
    WORKER_METRICS_PORT: String(base + CLUSTER_PORT_OFFSETS.workerMetrics[index]!),
  });
  const host = config.API_HOST === '0.0.0.0' ? '127.0.0.1' : config.API_HOST;
  const logDir = path.join(dataDir, 'logs');
  const logFile = (name: string): string => path.join(logDir, `${name}.log`);
  const lines: string[] = [];
  // Workers first: an API that starts a workflow before any worker polls only waits, but why wait.
  for (const index of [0, 1]) {
    const worker = await startRoleProcess(config.rootDir, `worker-${index + 1}`, 'worker', roleEnv(index), logFile(`worker-${index + 1}`));
    stops.push(() => worker.stop(60_000));
    lines.push(`worker ${index + 1} metrics    http://${host}:${base + CLUSTER_PORT_OFFSETS.workerMetrics[index]!}/metrics (pid ${worker.pid})`);
  }
  for (const index of [0, 1]) {
    const api = await startRoleProcess(config.rootDir, `api-${index + 1}`, 'api', roleEnv(index), logFile(`api-${index + 1}`));
    stops.push(() => api.stop(30_000));
    lines.push(`API ${index + 1}               http://${host}:${base + CLUSTER_PORT_OFFSETS.api[index]!} (pid ${api.pid})`);
  }

  const all = [
    `data directory      ${path.relative(process.cwd(), dataDir) || '.'}`,
    `API and worker logs ${path.relative(process.cwd(), logDir)}/{api,worker}-{1,2}.log`,
    ...lines.filter((l) => l.startsWith('API')),
    `Temporal (balanced) ${stack.temporalAddress}  <- TEMPORAL_ADDRESS of the app`,
    ...stack.temporal.servers.map((s) => `Temporal server ${s.index + 1}   frontend ${s.frontend}, metrics ${s.metricsUrl} (pid ${s.pid})`),
    `Temporal shards     ${stack.temporal.historyShards}`,
    `Redis Cluster       ${stack.redisUrl}`,
    `PostgreSQL          ${stack.databaseUrl} (+ databases temporal, temporal_visibility)`,
    `upstream            ${upstreamBaseUrl}`,
    ...lines.filter((l) => l.startsWith('worker')),
  ];
  process.stdout.write(`\nDurable billing cluster is ready:\n  ${all.join('\n  ')}\n\n`);
}

main().catch(async (err: unknown) => {
  if (err instanceof ConfigError || (err instanceof Error && err.name === 'ServiceStartError')) {
    process.stderr.write(`${err.message}\n`);
  } else if (log) {
    log.fatal({ err }, 'failed to start the cluster');
  } else {
    process.stderr.write(`failed to start the cluster: ${String(err)}\n`);
  }
  await stops.stopAll(); // leave no child running
  process.exit(1);
});
