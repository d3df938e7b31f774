/**
 * Handles on the real services that test/setup/global-setup.ts started (or that
 * REDIS_URL / DATABASE_URL / TEMPORAL_ADDRESS point at). Close what you open in afterAll.
 */
import { loadConfig, type Config } from '../../src/config';
import IORedis from 'ioredis';
import { createRedis, type Redis } from '../../src/redis/client';
import { Client } from 'pg';
import { createDb, type Knex } from '../../src/db/knex';

export function testConfig(): Readonly<Config> {
  return loadConfig();
}

function required(name: string, value: string | undefined): string {
  if (!value) throw new Error(`${name} is not set: run tests through jest so global setup starts the services`);
  return value;
}

/** A connected ioredis client on the test Redis. */
export async function testRedis(): Promise<Redis> {
  const redis = createRedis(required('REDIS_URL', testConfig().REDIS_URL), { lazyConnect: true });
  await redis.connect();
  return redis;
}

/** A knex instance on the test database (migrated by global setup). */
export function testDb(): Knex {
  return createDb(required('DATABASE_URL', testConfig().DATABASE_URL), { max: 5 });
}

/**
 * An empty database of its own on the test PostgreSQL (not migrated): for tests that need
 * the whole database to themselves. `drop` destroys the handle and the database.
 */
export async function scratchDatabase(prefix: string): Promise<{ db: Knex; drop: () => Promise<void> }> {
  const base = required('DATABASE_URL', testConfig().DATABASE_URL);
  const name = uniqueId(prefix).replace(/-/g, '_');
  const admin = new Client({ connectionString: base });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const url = new URL(base);
  url.pathname = `/${name}`;
  const db = createDb(url.toString());
  return {
    db,
    drop: async () => {
      await db.destroy();
      await admin.query(`DROP DATABASE ${name}`);
      await admin.end();
    },
  };
}

export function temporalAddress(): string {
  return required('TEMPORAL_ADDRESS', testConfig().TEMPORAL_ADDRESS);
}

/** A unique id so tests never share a tenant, key or request. */
export function uniqueId(prefix: string): string {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * A client whose every command fails at once, as when Redis is down. Nothing listens
 * on port 1 and no reconnection is scheduled, so no timer outlives the test.
 */
export function unreachableRedis(): Redis {
  const redis = new IORedis({
    host: '127.0.0.1',
    port: 1,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    // disconnect() arms a timer to destroy a stream that never closes; this one never opened.
    disconnectTimeout: 10,
  });
  redis.on('error', () => undefined);
  return redis;
}
