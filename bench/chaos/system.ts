/**
 * The system a soak runs against, all of it its own, on one of two topologies:
 * - `embedded` (`npm start`'s): the embedded stack in durable mode (PostgreSQL with fsync,
 *   Redis with AOF, the Temporal dev server on a SQLite file, so a restart keeps state;
 *   supervised, so a SIGKILLed child comes back by itself);
 * - `cluster` (`npm run cluster`'s, docs/cluster.md): two Temporal server processes on
 *   PostgreSQL and a Redis Cluster of three masters with a replica each; a fault kills one
 *   Temporal server process (started again on its ports, as a process manager would) or one
 *   Redis master (its replica takes over; the old master rejoins as a replica).
 * Both have two mock
 * upstreams configured as two channels (`good`, and `flaky`, which answers every request
 * with a 500 before its first byte), two API processes and two worker processes, and a
 * webhook receiver standing in for a usage-export destination.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { loadConfig } from '../../src/config';
import { createLogger, type Logger } from '../../src/log';
import { createDb } from '../../src/db/knex';
import { startStack, type EmbeddedServiceName } from '../../src/embedded';
import { startClusterStack } from '../../src/cluster/stack';
import { freePort } from '../../src/embedded/child';
import { billingDataConverter } from '../../src/codec/data-converter';
import { webhookReceiver, type Receiver } from '../../test/helpers/export-receivers';
import { managedProcess, type ManagedProcess } from './processes';
import type { Knex } from 'knex';

export const ADMIN_TOKEN = 'chaos-admin-token-0123456789';
export const EXPORT_SECRET = 'chaos-export-secret-0123456789';
export const CHAOS_MODEL = 'gpt-4o-mini';
/** 1 unit per Mtok in, 2 per Mtok out: a short chat costs tens of micros, its reservation ~150. */
export const CHAOS_PRICE = { input_price_micros_per_mtok: 1_000_000, output_price_micros_per_mtok: 2_000_000, max_output_tokens: 64 };
/** Short: a reservation left by a fault is swept at the end of a run, not 15 minutes later. */
export const SWEEP_PENDING_AFTER_SECONDS = 20;

export type Topology = 'embedded' | 'cluster';

/** A dependency a fault kills: one of its processes, SIGKILLed; resolves once the dependency is whole again. */
export interface ServiceUnderFault {
  /** Kills, waits for the return, and names what was killed. */
  killAndRecover(rng: () => number, downMs: number): Promise<string>;
}

export interface SoakSystem {
  topology: Topology;
  endpoints: { temporalAddress: string; redisUrl: string; databaseUrl: string };
  /** The dependencies a fault can kill on this topology (the cluster's PostgreSQL is not supervised). */
  services: Partial<Record<EmbeddedServiceName, ServiceUnderFault>>;
  apis: ManagedProcess[];
  workers: ManagedProcess[];
  /** [good, flaky]: the flaky channel fails every request before its first byte. */
  upstreams: ManagedProcess[];
  receiver: Receiver;
  db: Knex;
  temporal: Client;
  /** Crash loops the stack reported (a soak that sees one has failed). */
  fatal: Error[];
  apiUrl(i: number): string;
  admin<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  stop(): Promise<void>;
}

/** Where the soak's processes' output is kept after a run (their data directory is removed). */
export const CHAOS_LOG_DIR = path.join(os.tmpdir(), `billing-chaos-logs-${process.pid}`);

export async function startSoakSystem(log: (line: string) => void, stackLogLevel: string, topology: Topology = 'embedded'): Promise<SoakSystem> {
  fs.rmSync(CHAOS_LOG_DIR, { recursive: true, force: true });
  fs.mkdirSync(CHAOS_LOG_DIR, { recursive: true });
  const config = loadConfig({ PATH: process.env.PATH });
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'billing-chaos-'));
  fs.chmodSync(dataDir, 0o755); // the postgres user must reach its cluster directory
  const stops: Array<() => Promise<void>> = [() => Promise.resolve(fs.rmSync(dataDir, { recursive: true, force: true }))];
  const stopAll = async (): Promise<void> => {
    for (const stop of stops.splice(0).reverse()) await stop().catch((err: unknown) => log(`stop failed: ${String(err)}`));
  };
  try {
    const fatal: Error[] = [];
    const started = topology === 'cluster'
      ? await startCluster(config.rootDir, dataDir, config.TEMPORAL_NAMESPACE, createLogger(stackLogLevel, 'chaos-cluster'))
      : await startEmbedded(dataDir, fatal, log, createLogger(stackLogLevel, 'chaos-stack'));
    stops.push(started.stop);
    const endpoints = started.endpoints;
    log(`${topology} stack: temporal=${endpoints.temporalAddress} redis=${endpoints.redisUrl} postgres=${endpoints.databaseUrl}`);

    const receiver = await webhookReceiver(EXPORT_SECRET);
    stops.push(() => receiver.close());

    const upstreams = await Promise.all(['good', 'flaky'].map(async (name) => {
      const port = await freePort();
      return managedProcess({ name: `upstream-${name}`, rootDir: config.rootDir, script: 'src/upstream/mock/main.ts', args: [], port, env: { MOCK_UPSTREAM_PORT: String(port), LOG_LEVEL: 'warn' }, logFile: path.join(CHAOS_LOG_DIR, `upstream-${name}.log`) });
    }));
    for (const u of upstreams) stops.push(() => u.stop());
    await Promise.all(upstreams.map((u) => u.start()));
    // The flaky channel: every answer a 500 before the first byte, so every request it gets fails over.
    await fetch(`http://127.0.0.1:${upstreams[1]!.port}/__mock/defaults`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ failBeforeFirstChunk: true }) });

    const taskQueue = `chaos-${process.pid}`;
    const roleEnv = (port: number, metricsPort: number): Record<string, string> => ({
      TEMPORAL_ADDRESS: endpoints.temporalAddress,
      REDIS_URL: endpoints.redisUrl,
      DATABASE_URL: endpoints.databaseUrl,
      TEMPORAL_TASK_QUEUE: taskQueue,
      ADMIN_TOKEN,
      LOG_LEVEL: 'warn',
      API_HOST: '127.0.0.1',
      API_PORT: String(port),
      WORKER_METRICS_PORT: String(metricsPort),
      // Channels are configured below; `default` is the good mock, for the moment before they exist.
      UPSTREAM_BASE_URL: `http://127.0.0.1:${upstreams[0]!.port}/v1`,
      // The soak runs the maintenance jobs itself at the end (and a scheduled heal would hide drift).
      MAINTENANCE_SCHEDULES: 'false',
      SWEEP_PENDING_AFTER_SECONDS: String(SWEEP_PENDING_AFTER_SECONDS),
      RELAY_IDLE_TIMEOUT_SECONDS: '30',
      PARALLEL_LEASE_SECONDS: '10',
      CONSISTENCY_CONFIRM_GRACE_MS: '500',
      USAGE_EXPORT_WEBHOOK_URL: receiver.url,
      USAGE_EXPORT_WEBHOOK_SECRET: EXPORT_SECRET,
    });
    const role = async (kind: 'api' | 'worker', i: number): Promise<ManagedProcess> => {
      const port = await freePort();
      return managedProcess({ name: `${kind}-${i}`, rootDir: config.rootDir, script: 'src/main.ts', args: [kind], port, env: roleEnv(port, await freePort()), readyLine: 'Durable billing is ready', logFile: path.join(CHAOS_LOG_DIR, `${kind}-${i}.log`) });
    };
    const workers = [await role('worker', 1), await role('worker', 2)];
    const apis = [await role('api', 1), await role('api', 2)];
    for (const p of [...workers, ...apis]) stops.push(() => p.stop());
    // Sequentially: both migrate at start, and four tsx compilations at once starve a 2-core machine.
    await workers[0]!.start();
    await Promise.all([workers[1]!.start(), ...apis.map((a) => a.start())]);

    const db = createDb(endpoints.databaseUrl, { max: 4 }, createLogger(stackLogLevel, 'chaos-harness'));
    stops.push(() => db.destroy());
    const connection = await Connection.connect({ address: endpoints.temporalAddress });
    stops.push(() => connection.close());
    const temporal = new Client({ connection, namespace: config.TEMPORAL_NAMESPACE, dataConverter: billingDataConverter(config.payloadCodecKeys) });

    const apiUrl = (i: number): string => `http://127.0.0.1:${apis[i % apis.length]!.port}`;
    const admin = async <T,>(method: string, p: string, body?: unknown): Promise<{ status: number; body: T }> => {
      let last: unknown;
      // Through whichever API answers (one may be down for a fault), retried while a dependency restarts.
      for (let attempt = 0; attempt < 60; attempt++) {
        try {
          const res = await fetch(`${apiUrl(attempt)}${p}`, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
          const text = await res.text();
          if (res.status < 500) return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
          last = `${res.status} ${text}`;
        } catch (err) {
          last = err;
        }
        await new Promise((r) => setTimeout(r, 500));
      }
      throw new Error(`admin ${method} ${p} failed: ${String(last)}`);
    };
    return { topology, endpoints, services: started.services, apis, workers, upstreams, receiver, db, temporal, fatal, apiUrl, admin, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

interface StartedDependencies {
  endpoints: SoakSystem['endpoints'];
  services: SoakSystem['services'];
  stop(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The embedded stack, supervised: a killed child is restarted by its supervisor, not by the soak. */
async function startEmbedded(dataDir: string, fatal: Error[], log: (line: string) => void, logger: Logger): Promise<StartedDependencies> {
  const stack = await startStack(loadConfig({ PATH: process.env.PATH, API_PORT: String(await freePort()) }), {
    dataDir,
    ports: { temporal: await freePort(), temporalUi: await freePort(), redis: await freePort(), postgres: await freePort() },
    // A soak kills each service several times: a crash loop is many exits in a short window.
    supervision: { maxRestarts: 10, windowMs: 30_000, initialBackoffMs: 200, maxBackoffMs: 3_000 },
    onFatal: (err) => { fatal.push(err); log(`FATAL ${err.message}`); },
  }, logger);
  const supervised = (name: EmbeddedServiceName): ServiceUnderFault => ({
    async killAndRecover() {
      const service = stack.services[name]!;
      const pid = service.current().child.pid!;
      process.kill(pid, 'SIGKILL');
      // The supervisor sees the exit and restarts it; wait for the new child to serve.
      const deadline = Date.now() + 120_000;
      while (service.current().child.pid === pid && Date.now() < deadline) await sleep(50);
      await service.whenRunning();
      return `${name} pid ${pid}`;
    },
  });
  return {
    endpoints: stack,
    services: { redis: supervised('redis'), postgres: supervised('postgres'), temporal: supervised('temporal') },
    stop: () => stack.stop(),
  };
}

/** The production topology (src/cluster/stack.ts), durable; no PostgreSQL fault (nothing supervises it there). */
async function startCluster(rootDir: string, dataDir: string, namespace: string, logger: Logger): Promise<StartedDependencies> {
  const cluster = await startClusterStack({ rootDir, dataDir: path.join(dataDir, 'cluster'), namespace, fairness: true }, logger);
  const temporalServer: ServiceUnderFault = {
    async killAndRecover(rng, downMs) {
      const server = cluster.temporal.servers[Math.floor(rng() * cluster.temporal.servers.length)]!;
      const pid = server.pid;
      await server.kill();
      // The survivor takes the dead process's shards once its membership lapses; then it comes back.
      await sleep(downMs);
      await server.restart();
      return `temporal-server-${server.index + 1} pid ${pid}`;
    },
  };
  const redisMaster: ServiceUnderFault = {
    async killAndRecover(rng, downMs) {
      const masters = await cluster.redis.masterPorts();
      const { port } = await cluster.redis.killMaster(Math.floor(rng() * masters.length));
      // Its replica is promoted (cluster-node-timeout); the old master then rejoins as a replica.
      await cluster.redis.waitUntilHealthy(60_000);
      await sleep(downMs);
      await cluster.redis.restartNode(port);
      await cluster.redis.waitUntilHealthy(60_000);
      return `redis master :${port}`;
    },
  };
  return {
    endpoints: cluster,
    services: { temporal: temporalServer, redis: redisMaster },
    stop: () => cluster.stop(),
  };
}
