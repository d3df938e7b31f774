import IORedis, { Cluster, type ChainableCommander, type ClusterOptions, type RedisOptions } from 'ioredis';
import { keySlot } from './key-slot';
import { parseRedisUrl } from './redis-url';

/**
 * A Redis client of the project: one Redis, or a Redis Cluster (REDIS_URL=redis-cluster://...).
 * Both take the same commands; every key a command or script touches carries the tenant's hash
 * tag (cache-keys.ts), so on a cluster each lands on one slot and ioredis routes it there.
 */
export type Redis = IORedis | Cluster;

/** Commands fail fast while Redis is down (no offline queue), so admission can fall back to PostgreSQL instead of waiting. */
const FAIL_FAST = { enableOfflineQueue: false, maxRetriesPerRequest: 1 } as const;
const reconnectDelay = (attempt: number): number => Math.min(attempt * 100, 2000);

/**
 * Creates the client for `url` (see redis-url.ts for the forms). The single client fails fast.
 * The cluster client fails fast too (no offline queue while it has no slot map) but follows
 * MOVED (a slot moved for good: it updates its slot map) and ASK (a slot migrating: it asks the
 * target once) redirections, and rides out a failover: a command whose master went away is
 * retried every 100 ms against a refreshed slot map, at most `maxRedirections` times (~1.6 s),
 * then rejected, so admission falls back to PostgreSQL while the replica takes over.
 */
export function createRedis(url: string, opts: { lazyConnect?: boolean } = {}): Redis {
  const target = parseRedisUrl(url);
  if (target.mode === 'single') {
    return new IORedis(url, { ...FAIL_FAST, lazyConnect: opts.lazyConnect ?? false, retryStrategy: reconnectDelay });
  }
  const redisOptions: RedisOptions = {
    maxRetriesPerRequest: FAIL_FAST.maxRetriesPerRequest,
    ...(target.username ? { username: target.username } : {}),
    ...(target.password ? { password: target.password } : {}),
    ...(target.tls ? { tls: {} } : {}),
  };
  const clusterOptions: ClusterOptions = {
    enableOfflineQueue: FAIL_FAST.enableOfflineQueue,
    lazyConnect: opts.lazyConnect ?? false,
    maxRedirections: 16,
    retryDelayOnMoved: 0,
    retryDelayOnFailover: 100,
    retryDelayOnClusterDown: 100,
    retryDelayOnTryAgain: 100,
    slotsRefreshTimeout: 2000,
    clusterRetryStrategy: reconnectDelay,
    redisOptions,
  };
  return new Cluster(target.nodes, clusterOptions);
}

export function isCluster(redis: Redis): redis is Cluster {
  return redis instanceof Cluster;
}

/**
 * A second client to the same Redis with its own connections (for blocking reads and pub/sub,
 * which hold a connection). On a cluster this is a second Cluster: its blocking XREAD goes to the
 * master of the key's slot and follows that slot through a failover.
 */
export function duplicateRedis(redis: Redis, overrides: { enableOfflineQueue?: boolean; maxRetriesPerRequest?: number } = {}): Redis {
  if (!isCluster(redis)) return redis.duplicate(overrides);
  const { maxRetriesPerRequest, enableOfflineQueue } = overrides;
  return redis.duplicate([], {
    ...(enableOfflineQueue === undefined ? {} : { enableOfflineQueue }),
    redisOptions: { ...redis.options.redisOptions, ...(maxRetriesPerRequest === undefined ? {} : { maxRetriesPerRequest }) },
  });
}

/**
 * The nodes a whole-keyspace command (SCAN, INFO, FLUSHDB, DBSIZE) must visit: the one Redis, or
 * every master of the cluster (such a command sees only the node it runs on). On a cluster the
 * slot map must be loaded (status ready).
 */
export function masterNodes(redis: Redis): IORedis[] {
  return isCluster(redis) ? redis.nodes('master') : [redis];
}

export type PipelineReplies = Array<[Error | null, unknown]>;

/** A cluster's answer that the item's slot is served elsewhere or not served right now. */
const REDIRECTED = /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN) /;

/**
 * Runs one command per item, pipelined, and answers the replies in the items' order. A cluster
 * takes a pipeline only when all its keys are served by the same node, so on a cluster the
 * items are grouped by the node serving their key's slot (one pipeline per master, run in
 * parallel); one Redis gets a single pipeline. Each item's command must touch only `keyOf(item)`'s slot.
 *
 * ioredis follows a redirection inside a pipeline only when every command got the same one; after
 * a failover or a resharding a pipeline over many slots gets one per slot (or fails whole when its
 * node is gone), so on a cluster those items are sent again one by one, each following its own
 * MOVED/ASK and the refreshed slot map.
 */
export async function pipelinedByNode<T>(
  redis: Redis,
  items: readonly T[],
  keyOf: (item: T) => string,
  add: (pipeline: ChainableCommander, item: T) => void,
): Promise<PipelineReplies> {
  if (items.length === 0) return [];
  const run = async (indexes: readonly number[]): Promise<PipelineReplies> => {
    const pipeline = redis.pipeline();
    for (const i of indexes) add(pipeline, items[i]!);
    const answered = (await pipeline.exec()) ?? [];
    if (answered.length !== indexes.length) throw new Error(`Redis pipeline answered ${answered.length} of ${indexes.length} commands`);
    return answered;
  };
  const replies: PipelineReplies = new Array<[Error | null, unknown]>(items.length);
  if (!isCluster(redis)) {
    for (const [i, reply] of (await run(items.map((_, i) => i))).entries()) replies[i] = reply;
    return replies;
  }
  const groups = new Map<string, number[]>();
  for (const [i, item] of items.entries()) {
    const slot = keySlot(keyOf(item));
    // Before the slot map is loaded, a group per slot (each pipeline waits for it); then per serving node.
    const group = redis.slots[slot]?.[0] ?? `slot:${slot}`;
    const members = groups.get(group);
    if (members) members.push(i);
    else groups.set(group, [i]);
  }
  await Promise.all([...groups.values()].map(async (indexes) => {
    const answered = await run(indexes).catch(() => undefined);
    const again: number[] = [];
    for (const [n, i] of indexes.entries()) {
      const reply = answered?.[n];
      if (!reply || (reply[0] && REDIRECTED.test(reply[0].message))) again.push(i);
      else replies[i] = reply;
    }
    await Promise.all(again.map(async (i) => {
      replies[i] = (await run([i]))[0]!;
    }));
  }));
  return replies;
}
