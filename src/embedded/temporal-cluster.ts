/**
 * Embedded Temporal cluster: `servers` processes of the Temporal server (built once by
 * scripts/cluster-setup.sh into .cache/temporal-server/), each running all four services
 * (frontend, history, matching, worker), on PostgreSQL databases of their own, behind a
 * TCP balancer (./frontend-balancer.ts). Used by `npm run cluster` and the cluster tests,
 * which SIGKILL one process to watch the other take its shards.
 *
 * Every process reads deploy/temporal/server.yaml and deploy/temporal/dynamicconfig/billing.yaml,
 * the files docker-compose.yml mounts, and the schema is applied by deploy/temporal/setup-schema.sh,
 * the script compose's temporal-schema one-shot runs: one description of the server for both.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Connection, Client } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { assertPortFree, freePort, spawnService, waitUntilReady, ServiceStartError, type ServiceProcess } from './child';
import { startFrontendBalancer } from './frontend-balancer';
import { SEARCH_ATTRIBUTES } from '../workflows/search-attributes';
import { applyTemporalSchema, databaseEnv, dynamicConfigFile, temporalServerBinaries } from './temporal-server-files';

/** The shard count of a new cluster; it can never change afterwards (docs/cluster.md). */
export const DEFAULT_HISTORY_SHARDS = 16;

export interface TemporalClusterOptions {
  rootDir: string;
  /** Logs and rendered overrides of each server process. */
  dir: string;
  /** The PostgreSQL server that holds the persistence and visibility databases. */
  postgres: { host: string; port: number; user: string; password?: string };
  /** @default temporal, temporal_visibility */
  databases?: { persistence: string; visibility: string };
  namespace: string;
  /** @default 2 */
  servers?: number;
  /** @default DEFAULT_HISTORY_SHARDS */
  historyShards?: number;
  /** Process i takes basePort + 10*i ... + 9; free ports when unset. */
  basePort?: number;
  /** The frontend balancer's port; a free one when unset. */
  balancerPort?: number;
  /** Task-queue fairness (matching.enableFairness). @default true */
  fairness?: boolean;
  /** Workflow retention of the namespace. @default 72 h */
  retentionHours?: number;
}

export interface TemporalServerProcess {
  index: number;
  /** host:port of this process's own frontend (the balancer is what clients use). */
  frontend: string;
  metricsUrl: string;
  readonly pid: number | undefined;
  /** SIGKILL, as a crash; resolves once the process is gone. */
  kill(): Promise<void>;
  /** Starts a killed process again on its ports, as a process manager would; resolves once it serves the namespace. */
  restart(): Promise<void>;
  readonly process: ServiceProcess;
}

export interface TemporalCluster {
  /** The balancer in front of every frontend: the TEMPORAL_ADDRESS of the app. */
  address: string;
  servers: TemporalServerProcess[];
  historyShards: number;
  stop(): Promise<void>;
}

/** The ten ports of one server process, in the order of deploy/temporal/server.yaml's services. */
const PORT_NAMES = [
  'FRONTEND_GRPC_PORT', 'FRONTEND_HTTP_PORT', 'FRONTEND_MEMBERSHIP_PORT',
  'HISTORY_GRPC_PORT', 'HISTORY_MEMBERSHIP_PORT',
  'MATCHING_GRPC_PORT', 'MATCHING_MEMBERSHIP_PORT',
  'WORKER_GRPC_PORT', 'WORKER_MEMBERSHIP_PORT',
  'METRICS_PORT',
] as const;
type ServerPorts = Record<(typeof PORT_NAMES)[number], number>;

/**
 * PostgreSQL's cluster_membership table stores ports as SMALLINT: a membership port above
 * 32767 fails the server at start. So free ports are looked for below that, not from the OS.
 */
const MAX_SERVER_PORT = 32767;

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

async function freeLowPort(taken: Set<number>): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * (MAX_SERVER_PORT - 20_000));
    if (!taken.has(port) && await canListen(port)) {
      taken.add(port);
      return port;
    }
  }
}

const chosenPorts = new Set<number>();

async function serverPorts(basePort: number | undefined, index: number): Promise<ServerPorts> {
  const ports: Partial<ServerPorts> = {};
  for (const [offset, name] of PORT_NAMES.entries()) {
    ports[name] = basePort === undefined ? await freeLowPort(chosenPorts) : basePort + 10 * index + offset;
  }
  if (Math.max(...Object.values(ports)) > MAX_SERVER_PORT) {
    throw new ServiceStartError(`Temporal server ports must be below ${MAX_SERVER_PORT + 1} (PostgreSQL stores them as SMALLINT): choose a lower base port`);
  }
  return ports as ServerPorts;
}

async function connect(address: string): Promise<Connection> {
  return Connection.connect({ address, connectTimeout: 2_000 });
}

/** The namespace and the search attributes the workflows set (as the dev server's flags give them). */
async function registerNamespace(address: string, opts: TemporalClusterOptions): Promise<void> {
  const conn = await connect(address);
  try {
    const retentionSeconds = (opts.retentionHours ?? 72) * 3600;
    await conn.workflowService.registerNamespace({
      namespace: opts.namespace,
      workflowExecutionRetentionPeriod: msToTs(retentionSeconds * 1000),
    }).catch((err: unknown) => {
      if (!(err instanceof Error && /already exists/i.test(err.message))) throw err;
    });
    const existing = await conn.operatorService.listSearchAttributes({ namespace: opts.namespace });
    const missing = Object.keys(SEARCH_ATTRIBUTES).filter((name) => !(name in (existing.customAttributes ?? {})));
    if (missing.length > 0) {
      await conn.operatorService.addSearchAttributes({
        namespace: opts.namespace,
        // Every attribute of SEARCH_ATTRIBUTES is a Keyword (INDEXED_VALUE_TYPE_KEYWORD = 2).
        searchAttributes: Object.fromEntries(missing.map((name) => [name, 2])),
      });
    }
  } finally {
    await conn.close();
  }
}

/**
 * Ready means a workflow carrying every search attribute can start through this very
 * frontend: namespaces and search-attribute aliases reach each frontend's cache only on
 * its next refresh (seconds), and a start before that is refused.
 */
async function probeFrontend(frontend: string, namespace: string): Promise<boolean> {
  const conn = await connect(frontend);
  try {
    const client = new Client({ connection: conn, namespace });
    const workflowId = `cluster-readiness-probe-${process.pid}-${Date.now()}`;
    const handle = await client.workflow.start('clusterReadinessProbe', {
      workflowId,
      taskQueue: 'cluster-readiness-probe',
      searchAttributes: Object.fromEntries(Object.keys(SEARCH_ATTRIBUTES).map((name) => [name, ['probe']])),
    });
    await handle.terminate('readiness probe');
    return true;
  } finally {
    await conn.close();
  }
}

async function startServer(
  index: number, bin: string, opts: TemporalClusterOptions, clusterAddress: string, dynamicConfig: string,
): Promise<TemporalServerProcess> {
  const ports = await serverPorts(opts.basePort, index);
  const { METRICS_PORT, ...servicePorts } = ports;
  const frontend = `127.0.0.1:${ports.FRONTEND_GRPC_PORT}`;
  const logFile = path.join(opts.dir, `server-${index}.log`);
  // Each launch on the same ports: a restarted process takes its place in the ring and behind the balancer.
  const launch = async (): Promise<ServiceProcess> => {
    for (const [name, port] of Object.entries(ports)) await assertPortFree(port, `Temporal server ${index} ${name}`);
    const env = {
      PATH: process.env.PATH ?? '',
      ...databaseEnv(opts),
      ...Object.fromEntries(Object.entries(servicePorts).map(([name, port]) => [name, String(port)])),
      NUM_HISTORY_SHARDS: String(opts.historyShards ?? DEFAULT_HISTORY_SHARDS),
      BIND_ON_IP: '127.0.0.1',
      CLUSTER_RPC_ADDRESS: clusterAddress,
      PROMETHEUS_ENDPOINT: `127.0.0.1:${METRICS_PORT}`,
      DYNAMIC_CONFIG_FILE_PATH: dynamicConfig,
      LOG_LEVEL: 'error',
    };
    const log = fs.openSync(logFile, 'a');
    const proc = spawnService(`temporal-server-${index}`, bin,
      ['--config-file', path.join(opts.rootDir, 'deploy/temporal/server.yaml'), 'start'],
      { env, cwd: opts.dir, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    await waitUntilReady(proc, async () => {
      const conn = await connect(frontend);
      try {
        await conn.workflowService.getSystemInfo({});
        return true;
      } finally {
        await conn.close();
      }
    }, 90_000).catch((err: unknown) => {
      const tail = fs.readFileSync(logFile, 'utf8').split('\n').slice(-8).map((l) => l.slice(0, 400)).join('\n');
      throw new ServiceStartError(`${(err as Error).message}\n${tail}`);
    });
    return proc;
  };
  let proc = await launch();
  return {
    index,
    frontend,
    metricsUrl: `http://127.0.0.1:${METRICS_PORT}/metrics`,
    get pid() { return proc.child.pid; },
    get process() { return proc; },
    kill: () => proc.stop('SIGKILL'),
    restart: async () => {
      await proc.stop('SIGKILL');
      proc = await launch();
      await waitUntilReady(proc, () => probeFrontend(frontend, opts.namespace), 60_000);
    },
  };
}

export async function startTemporalCluster(opts: TemporalClusterOptions): Promise<TemporalCluster> {
  const bin = temporalServerBinaries(opts.rootDir);
  fs.mkdirSync(opts.dir, { recursive: true });
  await applyTemporalSchema(opts);
  const count = opts.servers ?? 2;
  const balancerPort = opts.balancerPort ?? await freePort();
  await assertPortFree(balancerPort, 'Temporal frontend balancer');
  const clusterAddress = `127.0.0.1:${balancerPort}`;
  const dynamicConfig = dynamicConfigFile(opts);
  const servers: TemporalServerProcess[] = [];
  const stopServers = async (): Promise<void> => {
    // SIGTERM: each process hands its shards back before it exits.
    await Promise.all(servers.map((s) => s.process.stop('SIGTERM', 20_000)));
  };
  try {
    // One after the other: processes that start together contend for every shard at once.
    for (let i = 0; i < count; i++) servers.push(await startServer(i, bin.server, opts, clusterAddress, dynamicConfig));
    const balancer = await startFrontendBalancer({ port: balancerPort, backends: servers.map((s) => s.frontend) });
    try {
      await registerNamespace(clusterAddress, opts);
      for (const server of servers) {
        await waitUntilReady(server.process, () => probeFrontend(server.frontend, opts.namespace), 60_000);
      }
    } catch (err) {
      await balancer.stop();
      throw err;
    }
    return {
      address: balancer.address,
      servers,
      historyShards: opts.historyShards ?? DEFAULT_HISTORY_SHARDS,
      stop: async () => {
        await balancer.stop();
        await stopServers();
      },
    };
  } catch (err) {
    await stopServers();
    throw err;
  }
}
