/**
 * `npm run test:cluster` (docs/cluster.md, docs/redis-cluster.md; issue 13): the end-to-end suite
 * (chat, streams, idempotency, disconnects, concurrency, Schedules) and the cluster tests of
 * test/cluster/ on the production topology: a Temporal cluster of two server processes on
 * PostgreSQL and a Redis Cluster, started by test/setup/cluster-global-setup.ts. Tests that
 * SIGKILL a server start a Temporal cluster or Redis Cluster of their own, so the shared one
 * stays whole. One file at a time: each runs many server processes on a small machine.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- a CommonJS jest config extending the default one
const base = require('./jest.config.js');

module.exports = {
  ...base,
  testMatch: [
    '<rootDir>/test/e2e/{chat-completions,concurrency-idempotency,faults,maintenance-schedules}.test.ts',
    '<rootDir>/test/cluster/**/*.test.ts',
  ],
  testPathIgnorePatterns: ['/node_modules/'],
  globalSetup: '<rootDir>/test/setup/cluster-global-setup.ts',
  testTimeout: 180000,
  maxWorkers: 1,
  // One worker means in band: a client a test file left connecting (an ioredis Cluster retrying
  // nodes the teardown stopped) would keep jest alive after the summary and global teardown.
  forceExit: true,
};
