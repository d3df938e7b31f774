/**
 * The embedded PostgreSQL (fsync on) and, when asked, Redis that a datastore benchmark runs
 * against, in a temporary directory removed afterwards; the database is migrated first.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Knex } from 'knex';
import { createDb } from '../../src/db/knex';
import { migrateLatest } from '../../src/db/migrate';
import { freePort } from '../../src/embedded/child';
import { startEmbeddedPostgres } from '../../src/embedded/postgres';
import { startEmbeddedRedis } from '../../src/embedded/redis';
import { createRedis, type Redis } from '../../src/redis/client';

export interface Datastores {
  db: Knex;
  databaseUrl: string;
  /** Only when `redis` was asked for. */
  redis?: Redis;
  redisUrl?: string;
}

export async function withDatastores<T>(name: string, opts: { redis?: { appendOnly: boolean } }, run: (stores: Datastores) => Promise<T>): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `bench-${name}-`));
  fs.chmodSync(dir, 0o755); // the server may run as the postgres user (when we are root)
  const stops: Array<() => Promise<void> | void> = [() => fs.rmSync(dir, { recursive: true, force: true })];
  try {
    const pg = await startEmbeddedPostgres({ port: await freePort(), dir: path.join(dir, 'postgres') });
    stops.unshift(() => pg.stop());
    const db = createDb(pg.url, { max: 4 });
    stops.unshift(() => db.destroy());
    await migrateLatest(db);
    const stores: Datastores = { db, databaseUrl: pg.url };
    if (opts.redis) {
      const server = await startEmbeddedRedis({ port: await freePort(), dir: path.join(dir, 'redis'), appendOnly: opts.redis.appendOnly });
      stops.unshift(() => server.stop());
      const redis = createRedis(server.url, { lazyConnect: true });
      await redis.connect();
      stops.unshift(() => redis.disconnect());
      Object.assign(stores, { redis, redisUrl: server.url });
    }
    return await run(stores);
  } finally {
    for (const stop of stops) await stop();
  }
}
