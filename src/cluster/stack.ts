/**
 * The production-shaped services on one machine (docs/cluster.md): embedded PostgreSQL
 * holding the ledger and Temporal's two databases, a Temporal cluster of two server
 * processes on it, and a Redis Cluster of three masters with a replica each. Started by
 * `npm run cluster` (./main.ts) and by the cluster tests' global setup.
 */
import path from 'node:path';
import type { Logger } from '../log';
import { freePort } from '../embedded/child';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../embedded/postgres';
import { startEmbeddedRedisCluster, type EmbeddedRedisCluster } from '../embedded/redis-cluster';
import { startTemporalCluster, type TemporalCluster } from '../embedded/temporal-cluster';
import { ShutdownList } from '../shutdown';

export interface ClusterStackOptions {
  rootDir: string;
  dataDir: string;
  namespace: string;
  /** Fixed ports (see CLUSTER_BASE_PORT in src/config.ts); free ones when unset (tests). */
  basePort?: number;
  /** Throwaway mode for tests: no fsync in PostgreSQL, no AOF in Redis. */
  ephemeral?: boolean;
  /** Task-queue fairness. @default true */
  fairness?: boolean;
  historyShards?: number;
}

export interface ClusterStack {
  temporalAddress: string;
  redisUrl: string;
  databaseUrl: string;
  postgres: EmbeddedPostgres;
  temporal: TemporalCluster;
  redis: EmbeddedRedisCluster;
  stop(): Promise<void>;
}

/** Offsets from CLUSTER_BASE_PORT (src/config.ts documents the same plan). */
export const CLUSTER_PORT_OFFSETS = {
  temporalBalancer: 0, api: [1, 2], workerMetrics: [3, 4], mockUpstream: 5, postgres: 6, redis: 10, temporalServers: 20,
} as const;

export async function startClusterStack(opts: ClusterStackOptions, log: Logger): Promise<ClusterStack> {
  const stops = new ShutdownList(log);
  const at = (offset: number): number | undefined => (opts.basePort === undefined ? undefined : opts.basePort + offset);
  try {
    const postgres = await startEmbeddedPostgres({
      port: at(CLUSTER_PORT_OFFSETS.postgres) ?? await freePort(),
      dir: path.join(opts.dataDir, 'postgres'),
      unsafeFast: opts.ephemeral,
    });
    stops.push(postgres.stop);
    const pgUrl = new URL(postgres.url);
    log.info({ url: postgres.url }, 'embedded PostgreSQL started');

    const temporal = await startTemporalCluster({
      rootDir: opts.rootDir,
      dir: path.join(opts.dataDir, 'temporal'),
      postgres: { host: pgUrl.hostname, port: Number(pgUrl.port), user: decodeURIComponent(pgUrl.username) },
      namespace: opts.namespace,
      basePort: at(CLUSTER_PORT_OFFSETS.temporalServers),
      balancerPort: at(CLUSTER_PORT_OFFSETS.temporalBalancer),
      historyShards: opts.historyShards,
      fairness: opts.fairness,
    });
    stops.push(temporal.stop);
    log.info({ address: temporal.address, servers: temporal.servers.map((s) => s.frontend) }, 'Temporal cluster started');

    const redis = await startEmbeddedRedisCluster({
      dir: path.join(opts.dataDir, 'redis-cluster'),
      basePort: at(CLUSTER_PORT_OFFSETS.redis),
      appendOnly: !opts.ephemeral,
    });
    stops.push(redis.stop);
    log.info({ url: redis.url }, 'Redis Cluster started');

    return {
      temporalAddress: temporal.address,
      redisUrl: redis.url,
      databaseUrl: postgres.url,
      postgres,
      temporal,
      redis,
      stop: () => stops.stopAll(),
    };
  } catch (err) {
    await stops.stopAll();
    throw err;
  }
}
