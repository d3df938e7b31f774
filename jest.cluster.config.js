/**
 * `npm run test:cluster` (docs/cluster.md): the end-to-end suite (chat, streams, idempotency,
 * disconnects, concurrency, Schedules) and the cluster tests of test/cluster/, on the
 * production topology: a Temporal cluster of two server processes on PostgreSQL and a
 * Redis Cluster, started by test/setup/cluster-global-setup.ts.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- jest reads CommonJS configs; this one extends the other
const base = require('./jest.config.js');

module.exports = {
  ...base,
  testMatch: [
    '<rootDir>/test/e2e/{chat-completions,concurrency-idempotency,faults,maintenance-schedules}.test.ts',
    '<rootDir>/test/cluster/**/*.test.ts',
  ],
  testPathIgnorePatterns: ['/node_modules/'],
  globalSetup: '<rootDir>/test/setup/cluster-global-setup.ts',
  testTimeout: 120000,
};
