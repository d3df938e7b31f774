/**
 * Jest global setup: starts the same embedded services as `npm start` (real
 * Temporal dev server, Redis, PostgreSQL) on free ports in a throwaway data
 * directory, migrates the database, and exports the URLs to the test workers
 * through the environment. A service whose URL is already set is used as is.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config';
import { createLogger } from '../../src/log';
import { createDb } from '../../src/db/knex';
import { migrateLatest } from '../../src/db/migrate';
import { freePort } from '../../src/embedded/child';
import { startStack, type RunningStack, type StackEndpoints } from '../../src/embedded';

declare global {
  var __BILLING_TEST_STACK__: { stack: Pick<RunningStack, 'stop'>; dataDir: string } | undefined;
}

export default async function globalSetup(): Promise<void> {
  const started = Date.now();
  const config = loadConfig();
  const log = createLogger('warn', 'test-stack');
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'billing-test-'));
  fs.chmodSync(dataDir, 0o755); // the postgres user must reach its cluster directory
  const stack = await startStack(config, {
    dataDir,
    ephemeral: true,
    ports: { temporal: await freePort(), temporalUi: await freePort(), redis: await freePort(), postgres: await freePort() },
  }, log);
  await useTestStack({ stack, dataDir });
  process.stdout.write(`\n[test stack] ready in ${Date.now() - started} ms: temporal=${stack.temporalAddress} redis=${stack.redisUrl} postgres=${stack.databaseUrl}\n`);
}

/**
 * Hands a started stack to the test workers (the dev-server stack here, the cluster stack in
 * cluster-global-setup.ts): its URLs in the environment, logs silent, Schedules off, the
 * database migrated; global-teardown.ts stops it.
 */
export async function useTestStack(running: { stack: StackEndpoints & Pick<RunningStack, 'stop'>; dataDir: string }): Promise<void> {
  const { stack } = running;
  globalThis.__BILLING_TEST_STACK__ = running;

  process.env.TEMPORAL_ADDRESS = stack.temporalAddress;
  process.env.REDIS_URL = stack.redisUrl;
  process.env.DATABASE_URL = stack.databaseUrl;
  // A passing run prints its summary, not log lines: TEST_LOG_LEVEL=info (or debug, ...) shows them.
  process.env.LOG_LEVEL = process.env.TEST_LOG_LEVEL ?? 'silent';
  // Workers started by tests create no maintenance Schedules (a scheduled consistency check could
  // heal drift a test made on purpose); test/e2e/maintenance-schedules.test.ts turns them on.
  process.env.MAINTENANCE_SCHEDULES = 'false';

  const db = createDb(stack.databaseUrl);
  try {
    await migrateLatest(db);
  } catch (err) {
    await stack.stop(); // jest skips global teardown when setup fails: leave nothing running
    throw err;
  } finally {
    await db.destroy();
  }
}
