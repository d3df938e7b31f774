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
import { useTestStack } from './global-setup';
import { startClusterStack } from '../../src/cluster/stack';

export default async function clusterGlobalSetup(): Promise<void> {
  const started = Date.now();
  const config = loadConfig();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'billing-cluster-test-'));
  fs.chmodSync(dataDir, 0o755); // the postgres user must reach its cluster directory
  const stack = await startClusterStack({
    rootDir: config.rootDir, dataDir, namespace: config.TEMPORAL_NAMESPACE, ephemeral: true,
  }, createLogger('warn', 'cluster-test-stack'));
  await useTestStack({ stack, dataDir });
  process.stdout.write(`\n[cluster test stack] ready in ${Date.now() - started} ms: temporal=${stack.temporalAddress} `
    + `(${stack.temporal.servers.length} servers, ${stack.temporal.historyShards} shards) redis=${stack.redisUrl} postgres=${stack.databaseUrl}\n`);
}
