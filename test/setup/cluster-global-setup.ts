/**
 * Global setup of `npm run test:cluster` (jest.cluster.config.js): the services of
 * `npm run cluster` (src/cluster/stack.ts) on free ports in a throwaway directory, the
 * database migrated, and their URLs exported to the test workers as global-setup.ts does,
 * so every test that runs on the dev server runs unchanged on the cluster.
 * test/setup/global-teardown.ts stops them.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config';
import { createLogger } from '../../src/log';
import { createDb } from '../../src/db/knex';
import { migrateLatest } from '../../src/db/migrate';
import { startClusterStack } from '../../src/cluster/stack';

export default async function clusterGlobalSetup(): Promise<void> {
  const started = Date.now();
  const config = loadConfig();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'billing-cluster-test-'));
  fs.chmodSync(dataDir, 0o755); // the postgres user must reach its cluster directory
  const stack = await startClusterStack({
    rootDir: config.rootDir, dataDir, namespace: config.TEMPORAL_NAMESPACE, ephemeral: true,
  }, createLogger('warn', 'cluster-test-stack'));
  globalThis.__BILLING_TEST_STACK__ = { stack, dataDir };

  process.env.TEMPORAL_ADDRESS = stack.temporalAddress;
  process.env.REDIS_URL = stack.redisUrl;
  process.env.DATABASE_URL = stack.databaseUrl;
  process.env.LOG_LEVEL = process.env.TEST_LOG_LEVEL ?? 'silent';
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
  process.stdout.write(`\n[cluster test stack] ready in ${Date.now() - started} ms: temporal=${stack.temporalAddress} `
    + `(${stack.temporal.servers.length} servers, ${stack.temporal.historyShards} shards) redis=${stack.redisUrl} postgres=${stack.databaseUrl}\n`);
}
