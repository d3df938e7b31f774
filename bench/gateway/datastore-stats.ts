/**
 * How many round trips a billed request makes to Redis and PostgreSQL: Redis `INFO commandstats`
 * (calls per command) and PostgreSQL's `pg_stat_database` (committed transactions, tuples written)
 * read before and after a gateway phase. The gateway's CPU above its Temporal floor is largely the
 * client side of these calls, so their count per request says where to look first.
 */
import { createRedis, masterNodes } from '../../src/redis/client';
import { createDb } from '../../src/db/knex';

export interface DatastoreSnapshot { redisCalls: Record<string, number>; pg: { xactCommit: number; tupInserted: number; tupUpdated: number } }

export interface DatastorePerRequest {
  /** Redis calls per request by command (evalsha, xadd, ...), only those with at least 0.05 per request. */
  redis: Record<string, number>;
  redisTotal: number;
  pg: { transactions: number; inserted: number; updated: number };
}

export async function datastoreSnapshot(redisUrl: string, databaseUrl: string): Promise<DatastoreSnapshot> {
  const redis = createRedis(redisUrl, { lazyConnect: true });
  const db = createDb(databaseUrl, { max: 1 });
  try {
    await redis.connect();
    const redisCalls: Record<string, number> = {};
    // On a cluster every master counts its own calls: the sum is the cluster's.
    for (const node of masterNodes(redis)) {
      const info = await node.info('commandstats');
      for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) redisCalls[m[1] ?? '?'] = (redisCalls[m[1] ?? '?'] ?? 0) + Number(m[2]);
    }
    const result = await db.raw<{ rows: Array<{ xact_commit: string; tup_inserted: string; tup_updated: string }> }>(
      'SELECT xact_commit, tup_inserted, tup_updated FROM pg_stat_database WHERE datname = current_database()',
    );
    const row = result.rows[0];
    return { redisCalls, pg: { xactCommit: Number(row?.xact_commit ?? 0), tupInserted: Number(row?.tup_inserted ?? 0), tupUpdated: Number(row?.tup_updated ?? 0) } };
  } finally {
    redis.disconnect();
    await db.destroy();
  }
}

/**
 * Per request between two snapshots. The snapshots' own calls (INFO, one SELECT) and the
 * statistics collector's delay (PostgreSQL reports a backend's counts when its transaction ends,
 * at most about a second late) make these approximate; they are counts, not timings.
 */
export function datastorePerRequest(a: DatastoreSnapshot, b: DatastoreSnapshot, requests: number): DatastorePerRequest {
  const redis: Record<string, number> = {};
  let redisTotal = 0;
  for (const [cmd, calls] of Object.entries(b.redisCalls)) {
    if (cmd === 'info') continue;
    const per = (calls - (a.redisCalls[cmd] ?? 0)) / requests;
    redisTotal += per;
    if (per >= 0.05) redis[cmd] = per;
  }
  return {
    redis,
    redisTotal,
    pg: {
      transactions: (b.pg.xactCommit - a.pg.xactCommit) / requests,
      inserted: (b.pg.tupInserted - a.pg.tupInserted) / requests,
      updated: (b.pg.tupUpdated - a.pg.tupUpdated) / requests,
    },
  };
}
