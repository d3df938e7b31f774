/**
 * Tenant fairness on the embedded Temporal dev server (issue 7, admission at the edge):
 * `src/embedded/temporal.ts` starts it with task-queue fairness on, and every billed
 * request carries its tenant as fairness key (src/workflows/client.ts, billed-request.ts),
 * so a backlogged task queue dispatches round-robin over tenants instead of first-in
 * first-out: one tenant's burst does not queue the others behind it.
 *
 * The check is behavioural. Seven billed requests queue their upstream call while no
 * worker polls activities (six of a noisy tenant, then one of a quiet tenant); then one
 * activity slot drains the backlog and the order is recorded. With fairness the quiet
 * tenant's call is among the first two; first-in first-out puts it last. The same check
 * runs against a control dev server started with the same arguments minus
 * `matching.enableFairness`, and must see first-in first-out there: so it can fail.
 */
import { Connection, type WorkflowHandle } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import type { createActivities } from '../../src/activities';
import { freePort, spawnService, waitUntilReady, type ServiceProcess } from '../../src/embedded/child';
import { TEMPORAL_DYNAMIC_CONFIG, temporalCliPath, temporalDevServerArgs } from '../../src/embedded/temporal';
import { billedRequestStart } from '../../src/workflows/client';
import type { billedRequest } from '../../src/workflows/billed-request';
import {
  ADMISSION_UPDATE_ID,
  admissionUpdate,
  billedRequestWorkflowId,
  type AdmissionDecision,
  type BilledRequestInput,
  type SettlementResult,
  type UpstreamOutcome,
} from '../../src/workflows/definitions';
import { devServerEnv, testDataConverter, workflowBundle } from '../helpers/temporal';
import { testConfig, uniqueId } from '../helpers/services';

type Activities = ReturnType<typeof createActivities>;

const workflowsPath = require.resolve('../../src/workflows');
const ADMITTED: AdmissionDecision = { admitted: true, reservedMicros: 210, path: 'redis', duplicate: false };
const COMPLETED: UpstreamOutcome = { status: 'completed', promptTokens: 10, completionTokens: 20, tokenSource: 'upstream', channel: 'mock' };
const COMMITTED: SettlementResult = { status: 'committed', costMicros: 50, deltaMicros: -160 };
const NOISY_REQUESTS = 6;

function input(tenantId: string): BilledRequestInput {
  const requestId = uniqueId('req-fair');
  return {
    requestId,
    tenantId,
    apiKeyId: 'key-fair',
    model: 'gpt-test',
    price: { model: 'gpt-test', inputPriceMicrosPerMtok: 1_000_000, outputPriceMicrosPerMtok: 2_000_000, maxOutputTokens: 100 },
    promptTokens: 10,
    maxOutputTokens: 100,
    reservedMicros: 210,
    stream: true,
    includeUsage: true,
    relayMode: 'redis',
    bodyRef: { requestId },
  };
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Queues NOISY_REQUESTS billed requests of one tenant, then one of another, each up to its
 * scheduled (not started) upstream call, then drains them through one activity slot.
 * Returns the tenants in the order the server dispatched their upstream calls.
 */
async function upstreamDispatchOrder(env: TestWorkflowEnvironment): Promise<string[]> {
  const namespace = env.namespace ?? 'default';
  const taskQueue = uniqueId('tq-fair');
  const noisy = uniqueId('noisy');
  const quiet = uniqueId('quiet');
  const order: string[] = [];
  const steps: Activities = {
    quotaCheckStep: () => Promise.resolve(ADMITTED),
    routingStep: () => Promise.resolve('mock'),
    upstreamCallStep: (req) => {
      order.push(req.tenantId === quiet ? 'quiet' : req.tenantId === noisy ? 'noisy' : req.tenantId);
      return Promise.resolve(COMPLETED);
    },
    billingStep: () => Promise.resolve(COMMITTED),
    conversationAppendStep: () => Promise.resolve({ appended: false, reason: 'already_appended' }),
  };
  // Workflow tasks and local activities only: regular activity tasks wait in the backlog.
  const workflowWorker = await Worker.create({
    connection: env.nativeConnection,
    namespace,
    taskQueue,
    workflowBundle: await workflowBundle(workflowsPath),
    activities: steps,
    enableNonLocalActivities: false,
    dataConverter: testDataConverter(),
  });
  return workflowWorker.runUntil(async () => {
    const handles: WorkflowHandle<typeof billedRequest>[] = [];
    for (const tenantId of [...Array<string>(NOISY_REQUESTS).fill(noisy), quiet]) {
      const req = input(tenantId);
      const decision = await env.client.workflow.executeUpdateWithStart(admissionUpdate, {
        updateId: ADMISSION_UPDATE_ID,
        startWorkflowOperation: billedRequestStart(req, taskQueue),
      });
      expect(decision.admitted).toBe(true);
      const handle = env.client.workflow.getHandle<typeof billedRequest>(billedRequestWorkflowId(req.requestId));
      // Scheduled in this order: the next request starts only once this one's upstream call waits.
      await waitFor(`the upstream call of ${req.requestId} to be scheduled`, async () => ((await handle.describe()).raw.pendingActivities ?? []).length === 1);
      handles.push(handle);
    }
    // One slot: the server hands out one task at a time, in its dispatch order.
    const activityWorker = await Worker.create({
      connection: env.nativeConnection,
      namespace,
      taskQueue,
      activities: { upstreamCallStep: steps.upstreamCallStep },
      maxConcurrentActivityTaskExecutions: 1,
      dataConverter: testDataConverter(),
    });
    await activityWorker.runUntil(() => Promise.all(handles.map((h) => h.result())));
    return order;
  });
}

describe('Temporal task-queue fairness (issue 7)', () => {
  it('the embedded dev server is started with fairness on and one partition per task queue', () => {
    const args = temporalDevServerArgs({ rootDir: '/x', port: 7233, uiPort: 8233, namespace: 'default', headless: true });
    const values = args.flatMap((arg, i) => (args[i - 1] === '--dynamic-config-value' ? [arg] : []));
    expect(values).toEqual([
      'matching.enableFairness=true',
      'matching.numTaskqueueReadPartitions=1',
      'matching.numTaskqueueWritePartitions=1',
    ]);
    // The CLI takes KEY=VALUE with a JSON value.
    for (const value of values) expect(() => JSON.parse(value.slice(value.indexOf('=') + 1)) as unknown).not.toThrow();
    expect(TEMPORAL_DYNAMIC_CONFIG).toEqual({
      'matching.enableFairness': true,
      'matching.numTaskqueueReadPartitions': 1,
      'matching.numTaskqueueWritePartitions': 1,
    });
  });

  describe('on the dev server global setup started (src/embedded/temporal.ts)', () => {
    let env: TestWorkflowEnvironment;
    beforeAll(async () => {
      env = await devServerEnv();
    });
    afterAll(async () => {
      await env?.teardown();
    });

    it("dispatches a quiet tenant's backlogged upstream call among the first two, not behind a noisy tenant's burst", async () => {
      const order = await upstreamDispatchOrder(env);
      expect([...order].sort()).toEqual([...Array<string>(NOISY_REQUESTS).fill('noisy'), 'quiet']);
      // Round-robin over the two keys puts it second (ties go to the older task), first-in first-out last.
      expect({ order, quietAmongFirstTwo: order.indexOf('quiet') <= 1 }).toEqual({ order, quietAmongFirstTwo: true });
    }, 120_000);
  });

  describe('the check can fail: a control dev server without matching.enableFairness', () => {
    let server: ServiceProcess | undefined;
    let env: TestWorkflowEnvironment;
    beforeAll(async () => {
      const namespace = testConfig().TEMPORAL_NAMESPACE;
      // A dev server also opens ports of its own beside --port; under a loaded suite one of them can be
      // taken between freePort() and the start (it then exits with a bind panic): try another port.
      let address = '';
      for (let attempt = 1; ; attempt++) {
        const port = await freePort();
        const all = temporalDevServerArgs({ rootDir: testConfig().rootDir, port, uiPort: port, namespace, headless: true });
        // Same arguments (one partition per task queue included), fairness left at its default (off).
        const args = all.filter((arg, i) => arg !== 'matching.enableFairness=true' && all[i + 1] !== 'matching.enableFairness=true');
        expect(args).toHaveLength(all.length - 2);
        server = spawnService('temporal-control', temporalCliPath(testConfig().rootDir), args);
        address = `127.0.0.1:${port}`;
        try {
          await waitUntilReady(server, async () => {
            const conn = await Connection.connect({ address, connectTimeout: 1000 });
            try {
              await conn.workflowService.describeNamespace({ namespace });
              return true;
            } finally {
              await conn.close();
            }
          }, 60_000);
          break;
        } catch (err) {
          await server.stop().catch(() => undefined);
          if (attempt >= 3) throw err;
        }
      }
      env = await TestWorkflowEnvironment.createFromExistingServer({ address, namespace, client: { dataConverter: testDataConverter() } });
    }, 90_000);
    afterAll(async () => {
      await env?.teardown();
      await server?.stop('SIGTERM', 15_000);
    }, 30_000);

    it("dispatches first-in first-out there: the quiet tenant's call comes last", async () => {
      const order = await upstreamDispatchOrder(env);
      expect(order).toEqual([...Array<string>(NOISY_REQUESTS).fill('noisy'), 'quiet']);
    }, 120_000);
  });
});
