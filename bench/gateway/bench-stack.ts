/**
 * The stack a whole-system benchmark runs against, started the way `npm start` starts it: the
 * embedded services (startStack: Temporal dev server with its SQLite file and Web UI, Redis with
 * AOF, PostgreSQL with fsync) on free ports in a throwaway data directory, or those named by
 * TEMPORAL_ADDRESS / REDIS_URL / DATABASE_URL, then the gateway child (bench/gateway/gateway-process.ts)
 * with a random admin token. Shared by bench/gateway.ts and bench/isolation.ts; `stop` may be
 * called at any moment (SIGINT during start-up) and stops whatever has started.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadConfig, type Config } from '../../src/config';
import { startStack, type StackEndpoints } from '../../src/embedded';

/** The embedded stack or the cluster stack: where the services are, and how to stop them. */
type BenchServices = StackEndpoints & { stop(): Promise<void> };
import { freePort } from '../../src/embedded/child';
import { createLogger } from '../../src/log';
import { startGateway, type GatewayProcess } from './gateway-process';
import { startClusterStack } from '../../src/cluster/stack';
import { nameProcesses } from './cpu';

export interface StartedBenchStack {
  config: Readonly<Config>;
  stack: BenchServices;
  gateway: GatewayProcess;
  adminToken: string;
  /** "Temporal embedded, Redis from env, ..." for the report header. */
  servicesNote: string;
  startedInS: number;
}

export interface BenchStack {
  start(): Promise<StartedBenchStack>;
  stop(): Promise<void>;
}

/**
 * `env` is laid over process.env for both the configuration the services start from and the
 * gateway child's environment (e.g. a setting a benchmark wants to compare on and off).
 */
export function benchStack(opts: {
  cpuProfile: boolean; keepData: boolean; env?: Readonly<Record<string, string>>; prefix?: string;
  /** The topology of `npm run cluster` (src/cluster/stack.ts) instead of the dev stack. @default false */
  cluster?: boolean;
}): BenchStack {
  const config = loadConfig({ ...process.env, ...opts.env });
  const log = createLogger('warn', 'bench');
  const adminToken = `bench-admin-${randomBytes(16).toString('hex')}`;
  let dataDir: string | undefined;
  let stack: BenchServices | undefined;
  let gateway: GatewayProcess | undefined;
  let stopping: Promise<void> | undefined;
  const stopOnce = async (): Promise<void> => {
    await gateway?.stop().catch((err: unknown) => console.error('stopping the gateway failed:', err));
    await stack?.stop();
    if (dataDir && !opts.keepData) fs.rmSync(dataDir, { recursive: true, force: true });
  };
  return {
    async start() {
      const started = performance.now();
      dataDir = fs.mkdtempSync(path.join(os.tmpdir(), opts.prefix ?? 'billing-bench-'));
      fs.chmodSync(dataDir, 0o755); // the postgres user must reach its cluster directory
      if (opts.cluster) {
        // As `npm run cluster` starts it (persistent: fsync, AOF), on free ports; each Temporal server's CPU is reported on its own.
        const cluster = await startClusterStack({ rootDir: config.rootDir, dataDir, namespace: config.TEMPORAL_NAMESPACE, fairness: config.EMBEDDED_TEMPORAL_FAIRNESS }, log);
        stack = cluster;
        nameProcesses(Object.fromEntries(cluster.temporal.servers.map((s) => [`temporal-server-${s.index + 1}`, s.pid])));
      } else {
        // Same options as `npm start` (persistent, Web UI on), only the ports and the data dir are ours.
        stack = await startStack(config, {
          dataDir,
          ports: { temporal: await freePort(), temporalUi: await freePort(), redis: await freePort(), postgres: await freePort() },
        }, log);
      }
      gateway = await startGateway(stack, adminToken, { cpuProfile: opts.cpuProfile, env: opts.env });
      const source = (name: string, set: string | undefined): string => `${name} ${set ? 'from env' : 'embedded'}`;
      const servicesNote = opts.cluster
        ? 'cluster stack (src/cluster/stack.ts): Temporal cluster of 2 server processes on PostgreSQL, Redis Cluster 3 masters + 3 replicas'
        : [source('Temporal', config.TEMPORAL_ADDRESS), source('Redis', config.REDIS_URL), source('PostgreSQL', config.DATABASE_URL)].join(', ');
      return { config, stack, gateway, adminToken, servicesNote, startedInS: (performance.now() - started) / 1000 };
    },
    stop() {
      stopping ??= stopOnce();
      return stopping;
    },
  };
}
