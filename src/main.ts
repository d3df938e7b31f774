/**
 * `npm start`: the whole system on its embedded defaults, or one role of it.
 *
 *   tsx src/main.ts          all: embedded stack (unless URLs are set) + migrations + worker + API
 *   tsx src/main.ts api      the Express front only (needs TEMPORAL_ADDRESS, REDIS_URL, DATABASE_URL)
 *   tsx src/main.ts worker   the Temporal worker only (same)
 *
 * SIGINT/SIGTERM stop everything this process started, children included.
 */
import path from 'node:path';
import { loadConfig, ConfigError, type Config } from './config';
import { createLogger, type Logger } from './log';
import { startStack, type StackEndpoints } from './embedded';
import { startRoles } from './roles';
import { ShutdownList } from './shutdown';
import { startMockUpstream } from './upstream/mock/server';

type Role = 'all' | 'api' | 'worker';

function parseRole(arg: string | undefined): Role {
  if (arg === undefined || arg === 'all' || arg === 'api' || arg === 'worker') return arg ?? 'all';
  throw new ConfigError(`unknown role "${arg}": use all, api or worker`);
}

function endpointsFromEnv(config: Readonly<Config>, role: Role): StackEndpoints {
  const missing = (['TEMPORAL_ADDRESS', 'REDIS_URL', 'DATABASE_URL'] as const).filter((k) => !config[k]);
  if (missing.length > 0) throw new ConfigError(`role "${role}" uses existing services: set ${missing.join(', ')} (or run without a role to start the embedded stack)`);
  return { temporalAddress: config.TEMPORAL_ADDRESS!, redisUrl: config.REDIS_URL!, databaseUrl: config.DATABASE_URL! };
}

let log: Logger | undefined;
/** What this process started, stopped in reverse order on a signal or a failed start (given the logger once there is one). */
let stops = new ShutdownList(undefined);
let stopping = false;
/** Set once the embedded stack runs: a signal ends its restarts before anything else stops. */
let expectStackExit: (() => void) | undefined;

async function main(config: Readonly<Config>, log: Logger): Promise<void> {
  const role = parseRole(process.argv[2]);
  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    expectStackExit?.();
    log.info({ signal }, 'shutting down');
    await stops.stopAll();
    log.info('stopped');
    process.exit(0);
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (stopping) process.exit(1); // a second signal: give up waiting
      void shutdown(signal);
    });
  }

  let endpoints: StackEndpoints;
  if (role === 'all') {
    const stack = await startStack(config, {
      dataDir: config.dataDir,
      ports: {
        temporal: config.EMBEDDED_TEMPORAL_PORT,
        temporalUi: config.EMBEDDED_TEMPORAL_UI_PORT,
        redis: config.EMBEDDED_REDIS_PORT,
        postgres: config.EMBEDDED_POSTGRES_PORT,
      },
      supervision: { maxRestarts: config.EMBEDDED_CRASH_LOOP_RESTARTS, windowMs: config.EMBEDDED_CRASH_LOOP_WINDOW_SECONDS * 1000 },
      // A child in a crash loop: the stack has stopped; stop the roles too and exit non-zero,
      // so a process manager (or the operator) sees a failed service instead of a hollow one.
      onFatal: (err) => {
        if (stopping) return;
        stopping = true;
        process.stderr.write(`${err.message}\n`);
        void stops.stopAll().finally(() => process.exit(1));
      },
    }, log);
    stops.push(stack.stop);
    expectStackExit = stack.expectExit;
    endpoints = stack;
  } else {
    endpoints = endpointsFromEnv(config, role);
  }

  let upstreamBaseUrl = config.UPSTREAM_BASE_URL;
  let mockUrl: string | undefined;
  if (!upstreamBaseUrl) {
    const mock = await startMockUpstream({ port: config.MOCK_UPSTREAM_PORT, host: config.API_HOST });
    stops.push(() => mock.close());
    upstreamBaseUrl = mock.url;
    mockUrl = mock.url;
  }
  const roles = await startRoles(config, endpoints, {
    api: role !== 'worker',
    worker: role !== 'api',
    workerMetrics: role === 'worker',
    upstreamBaseUrl,
  }, log);
  stops.push(roles.stop);

  const lines = [
    `data directory      ${path.relative(process.cwd(), config.dataDir) || '.'}`,
    `Temporal            ${endpoints.temporalAddress}`,
    endpoints.temporalUiUrl ? `Temporal Web UI     ${endpoints.temporalUiUrl}` : undefined,
    `Redis               ${endpoints.redisUrl}`,
    `PostgreSQL          ${endpoints.databaseUrl.replace(/\/\/[^@/]*@/, '//')}`,
    mockUrl ? `mock upstream       ${mockUrl}` : `upstream            ${upstreamBaseUrl}`,
    ...roles.urls,
  ].filter(Boolean);
  process.stdout.write(`\nDurable billing is ready (${role}):\n  ${lines.join('\n  ')}\n\n`);
}

async function boot(): Promise<void> {
  const config = loadConfig();
  log = createLogger(config.LOG_LEVEL, 'billing');
  stops = new ShutdownList(log);
  await main(config, log);
}

boot().catch(async (err: unknown) => {
  if (err instanceof ConfigError || (err instanceof Error && err.name === 'ServiceStartError')) {
    process.stderr.write(`${err.message}\n`);
  } else if (log) {
    log.fatal({ err }, 'failed to start');
  } else {
    process.stderr.write(`failed to start: ${String(err)}\n`);
  }
  await stops.stopAll(); // leave no child running
  process.exit(1);
});
