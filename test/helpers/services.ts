/**
 * Handles on the real services that test/setup/global-setup.ts started (or that
 * REDIS_URL / DATABASE_URL / TEMPORAL_ADDRESS point at). Close what you open in afterAll.
 */
import { loadConfig, type Config } from '../../src/config';
import { createRedis, type Redis } from '../../src/redis/client';
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

export function temporalAddress(): string {
  return required('TEMPORAL_ADDRESS', testConfig().TEMPORAL_ADDRESS);
}

/** A unique id so tests never share a tenant, key or request. */
export function uniqueId(prefix: string): string {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}
