/**
 * The route is recorded in the workflow (issue 10): the real billed-request workflow on
 * the dev server, with the real RoutingStep (ChannelRouter on the real PostgreSQL and
 * Redis, two channels of equal weight, so the choice is random) and an upstream step whose
 * first attempt dies (as a crashed worker's attempt does: Temporal retries it with the
 * arguments in history). RoutingStep runs once; every upstream attempt gets the same
 * route, so the retry starts on the same channel; the route is in the history.
 */
import type { Knex } from 'knex';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { createActivities } from '../../src/activities';
import { createRoutingStep } from '../../src/activities/routing-step';
import { createChannelRepository } from '../../src/channels/channel-repository';
import { createChannelHealth } from '../../src/channels/channel-health';
import { createChannelRouter } from '../../src/channels/channel-router';
import { developmentKeyring } from '../../src/codec/keyring';
import { createAffinityStore } from '../../src/routing/affinity-store';
import type { Redis } from '../../src/redis/client';
import { createOpenAICompatibleProvider } from '../../src/upstream/openai-compatible';
import { billedRequestStart } from '../../src/workflows/client';
import type { billedRequest } from '../../src/workflows/billed-request';
import {
  ADMISSION_UPDATE_ID,
  admissionUpdate,
  billedRequestWorkflowId,
  type AdmissionDecision,
  type BilledRequestInput,
  type RouteDecision,
  type SettlementResult,
  type UpstreamOutcome,
} from '../../src/workflows/definitions';
import { devServerEnv, withWorker } from '../helpers/temporal';
import { testDb, testRedis, uniqueId } from '../helpers/services';

type Activities = ReturnType<typeof createActivities>;
const workflowsPath = require.resolve('../../src/workflows');
const ADMITTED: AdmissionDecision = { admitted: true, reservedMicros: 210, path: 'redis', duplicate: false };
const COMMITTED: SettlementResult = { status: 'committed', costMicros: 50, deltaMicros: -160 };

describe('the route in workflow history (issue 10)', () => {
  let env: TestWorkflowEnvironment;
  let db: Knex;
  let redis: Redis;
  const channels: string[] = [];
  beforeAll(async () => {
    env = await devServerEnv();
    db = testDb();
    redis = await testRedis();
  });
  afterAll(async () => {
    const repo = createChannelRepository(db, developmentKeyring());
    for (const id of channels) await repo.remove(id);
    await env?.teardown();
    await db?.destroy();
    redis?.disconnect();
  });

  it('RoutingStep runs once; a retried upstream attempt gets the same route (same first channel), recorded in history', async () => {
    const repo = createChannelRepository(db, developmentKeyring());
    const model = uniqueId('route-wf');
    const a = uniqueId('wf-a');
    const b = uniqueId('wf-b');
    await repo.put({ id: a, baseUrl: 'http://127.0.0.1:9/v1', models: [model], weight: 1, enabled: true });
    await repo.put({ id: b, baseUrl: 'http://127.0.0.1:9/v1', models: [model], weight: 1, enabled: true });
    channels.push(a, b);
    const router = createChannelRouter({
      channels: repo, health: createChannelHealth(redis), affinity: createAffinityStore(redis),
      defaultProvider: createOpenAICompatibleProvider({ baseUrl: 'http://127.0.0.1:9/v1' }), cacheMs: 0,
    });
    const routingStep = jest.fn(createRoutingStep({ channels: {}, router }));
    const attempts: Array<string | RouteDecision> = [];
    const upstreamCallStep = jest.fn((_input: BilledRequestInput, route: string | RouteDecision): Promise<UpstreamOutcome> => {
      attempts.push(route);
      // The first attempt dies before any output, as a crashed worker's would.
      if (attempts.length % 2 === 1) return Promise.reject(new Error('worker lost mid-attempt'));
      const channel = typeof route === 'string' ? route : route.channel;
      return Promise.resolve({ status: 'completed', promptTokens: 10, completionTokens: 20, tokenSource: 'upstream', channel });
    });
    const steps: Partial<Activities> = {
      quotaCheckStep: () => Promise.resolve(ADMITTED),
      routingStep,
      upstreamCallStep,
      billingStep: () => Promise.resolve(COMMITTED),
    };
    await withWorker(env, { workflowsPath, activities: steps }, async (taskQueue) => {
      for (let i = 0; i < 6; i++) {
        attempts.length = 0;
        routingStep.mockClear();
        const requestId = uniqueId('route-req');
        const input: BilledRequestInput = {
          requestId, tenantId: 'tenant-route', apiKeyId: 'key-route', model,
          price: { model, inputPriceMicrosPerMtok: 1_000_000, outputPriceMicrosPerMtok: 2_000_000, maxOutputTokens: 100 },
          promptTokens: 10, maxOutputTokens: 100, reservedMicros: 210, stream: true, includeUsage: true, relayMode: 'redis', bodyRef: { requestId },
        };
        await env.client.workflow.executeUpdateWithStart(admissionUpdate, { updateId: ADMISSION_UPDATE_ID, startWorkflowOperation: billedRequestStart(input, taskQueue) });
        const handle = env.client.workflow.getHandle<typeof billedRequest>(billedRequestWorkflowId(requestId));
        const result = await handle.result();
        expect(routingStep).toHaveBeenCalledTimes(1);
        expect(attempts).toHaveLength(2);
        expect(attempts[1]).toEqual(attempts[0]);
        const route = attempts[0] as RouteDecision;
        expect([route.channel, ...route.fallbacks].sort()).toEqual([a, b].sort());
        expect(result.upstream?.channel).toBe(route.channel);
        // The route is the routing step's recorded result: one local activity marker each for admission, routing, settlement.
        const events = (await handle.fetchHistory()).events ?? [];
        expect(events.filter((e) => e.markerRecordedEventAttributes?.markerName === 'core_local_activity')).toHaveLength(3);
      }
    });
  });
});
