/**
 * The cluster suite (`npm run test:cluster`, issue 13): tests under test/cluster/ that start a
 * Redis Cluster of their own (src/embedded/redis-cluster.ts) beside the services global setup
 * starts. One file at a time: each runs six redis-server processes and SIGKILLs some of them.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- a CommonJS jest config extending the default one
const base = require('./jest.config.js');

module.exports = {
  ...base,
  roots: ['<rootDir>/test/cluster'],
  testPathIgnorePatterns: ['/node_modules/'],
  testTimeout: 180000,
  maxWorkers: 1,
};
