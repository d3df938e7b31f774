/**
 * A BilledRequests of the test's own on the real dev server, Redis and PostgreSQL, with the app's
 * worker running its workflows: for tests that stand between the API and Temporal (a late
 * describe, a lost admission answer) by wrapping the real workflow client.
 */
import type { Knex } from 'knex';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Redis } from '../../src/redis/client';
import { createRepositories } from '../../src/db/repositories';
import { createLogger } from '../../src/log';
import { createRequestRelay, type RequestRelay } from '../../src/redis/request-relay';
import { createBilledRequests, type BilledRequests, type BilledRequestsDeps } from '../../src/services/billed-requests';
import { createBilledRequestClient, type BilledRequestClient } from '../../src/workflows/client';
import { startTestApp, type TestApp } from './app';
import { devServerEnv } from './temporal';
import { testConfig, testDb, testRedis, uniqueId } from './services';

export interface BilledRequestsHarness {
  app: TestApp;
  env: TestWorkflowEnvironment;
  db: Knex;
  redis: Redis;
  relay: RequestRelay;
  /** The task queue the app's worker polls. */
  taskQueue: string;
  /** The real client of the app's task queue. */
  workflows(): BilledRequestClient;
  /**
   * A BilledRequests whose workflow calls are `wrap`'s (given the real client). `redisStatus`
   * other than 'ready' makes it admit in relay mode 'result', as while Redis is down.
   */
  billedRequests(wrap: (real: BilledRequestClient) => BilledRequestsDeps['workflows'], redisStatus?: string): BilledRequests;
}

/** Starts the harness in beforeAll and stops it in afterAll; the getter is valid inside tests. */
export function useBilledRequestsHarness(name: string): () => BilledRequestsHarness {
  const taskQueue = uniqueId(name);
  let harness: BilledRequestsHarness | undefined;
  const parts: Partial<Omit<BilledRequestsHarness, 'taskQueue' | 'workflows' | 'billedRequests'>> = {};
  beforeAll(async () => {
    parts.app = await startTestApp({ taskQueue });
    parts.env = await devServerEnv();
    parts.db = testDb();
    parts.redis = await testRedis();
    parts.relay = createRequestRelay(parts.redis, { ttlSeconds: 3600 });
    const { app, env, db, redis, relay } = parts as Required<typeof parts>;
    const workflows = (): BilledRequestClient => createBilledRequestClient(env.client, taskQueue);
    const repositories = createRepositories(db, { bodyKeys: testConfig().payloadCodecKeys });
    harness = {
      app, env, db, redis, relay, taskQueue, workflows,
      billedRequests: (wrap, redisStatus) => createBilledRequests({
        prices: repositories.modelPrices,
        workflows: wrap(workflows()),
        bodies: repositories.requestBodies,
        relay,
        redis: redisStatus === undefined ? redis : { status: redisStatus } as Pick<Redis, 'status'>,
        log: createLogger('silent', `${name}-test`),
      }),
    };
  }, 60_000);
  afterAll(async () => {
    await parts.app?.stop();
    await parts.env?.teardown();
    await parts.relay?.close();
    await parts.db?.destroy();
    parts.redis?.disconnect();
  });
  return () => {
    if (!harness) throw new Error('the billed-requests harness is used outside a test');
    return harness;
  };
}
