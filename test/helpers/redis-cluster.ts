/**
 * A Redis Cluster of three masters with one replica each for one test file
 * (src/embedded/redis-cluster.ts), in a throwaway directory, plus a connected cluster client
 * made by the project's own factory. Failover is fast here: a master unreachable for 1 s is failed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startEmbeddedRedisCluster, type EmbeddedRedisCluster } from '../../src/embedded/redis-cluster';
import { createRedis, isCluster, type Redis } from '../../src/redis/client';
import type { Cluster } from 'ioredis';
import { keySlot } from '../../src/redis/key-slot';
import { CacheKeys } from '../../src/redis/cache-keys';
import { uniqueId } from './services';

export const TEST_CLUSTER_NODE_TIMEOUT_MS = 1000;

export interface TestRedisCluster {
  cluster: EmbeddedRedisCluster;
  /** A connected client on the cluster (an ioredis Cluster), through createRedis. */
  redis: Cluster;
  /** A new connected client on the cluster; closed by stop(). */
  client(): Promise<Cluster>;
  stop(): Promise<void>;
}

export async function startTestRedisCluster(): Promise<TestRedisCluster> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'billing-redis-cluster-'));
  const cluster = await startEmbeddedRedisCluster({ dir, appendOnly: false, nodeTimeoutMs: TEST_CLUSTER_NODE_TIMEOUT_MS });
  const clients: Redis[] = [];
  const client = async (): Promise<Cluster> => {
    const redis = createRedis(cluster.url, { lazyConnect: true });
    if (!isCluster(redis)) throw new Error(`${cluster.url} did not make a cluster client`);
    redis.on('error', () => undefined); // a killed master's connection errors are expected; commands report their own
    clients.push(redis);
    await redis.connect();
    return redis;
  };
  const redis = await client();
  return {
    cluster,
    redis,
    client,
    async stop() {
      for (const c of clients) c.disconnect();
      await cluster.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The port of the master serving `key`'s slot, from the client's slot map. */
export function masterOf(redis: Cluster, key: string): number {
  const node = redis.slots[keySlot(key)]?.[0];
  if (!node) throw new Error(`no master known for slot ${keySlot(key)}`);
  return Number(node.split(':').pop());
}

/** Tenant ids whose keys land on every master (`perMaster` each), so a test covers the whole cluster. */
export function tenantsOnEveryMaster(redis: Cluster, perMaster = 1, prefix = 'tenant'): string[] {
  const masters = redis.nodes('master').map((n) => Number(n.options.port));
  const byMaster = new Map<number, string[]>();
  for (let tries = 0; tries < 10_000; tries++) {
    const tenantId = uniqueId(prefix);
    const port = masterOf(redis, CacheKeys.tenantQuota(tenantId));
    const list = byMaster.get(port) ?? [];
    if (list.length < perMaster) list.push(tenantId);
    byMaster.set(port, list);
    if (masters.every((m) => (byMaster.get(m)?.length ?? 0) >= perMaster)) return [...byMaster.values()].flat();
  }
  throw new Error('could not spread tenants over every master');
}
