/**
 * Transaction-aware dispatch (M5) on the real PostgreSQL and Temporal dev server: tasks
 * registered in a transaction are written to the outbox in it, started as workflows only
 * after the commit (M5.1), never after a rollback (M5.2), in batches (M5.3), and a
 * second send is a no-op (M5.4). A crash between commit and send loses nothing: the
 * drain sends the row later. The workflows are the real budgetAlert workflow on a worker
 * whose delivery activity is a counting fake, so "started once" is "ran once".
 */
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import type { Knex } from 'knex';
import { Registry } from 'prom-client';
import { createDispatchActivities } from '../../src/dispatch/activities';
import { createDispatcher, DispatchOutsideTransactionError, type Dispatch, type DispatcherDeps } from '../../src/dispatch/dispatcher';
import { createOutboxRepository } from '../../src/dispatch/outbox-repository';
import { DispatchKind, type DispatchTask } from '../../src/dispatch/task-kinds';
import { createLogger } from '../../src/log';
import { createBillingMetrics } from '../../src/metrics';
import type { BudgetAlertInput, BudgetAlertResult } from '../../src/workflows/budget-alert-definitions';
import { outboxDrainWorkflow } from '../../src/workflows/maintenance';
import { SearchKeys } from '../../src/workflows/search-attributes';
import { metricValue } from '../helpers/activity-deps';
import { testDb, uniqueId } from '../helpers/services';
import { devServerEnv, testDataConverter, workflowBundle } from '../helpers/temporal';

const workflowsPath = require.resolve('../../src/workflows');

let env: TestWorkflowEnvironment;
let db: Knex;
let worker: Worker;
let running: Promise<void>;
const taskQueue = uniqueId('dispatch-tq');
const outbox = () => createOutboxRepository(db);
/** Every alert id the fake delivery activity was run for, in order. */
const delivered: string[] = [];

beforeAll(async () => {
  env = await devServerEnv();
  db = testDb();
  worker = await Worker.create({
    connection: env.nativeConnection,
    namespace: env.namespace ?? 'default',
    taskQueue,
    workflowBundle: await workflowBundle(workflowsPath),
    dataConverter: testDataConverter(),
    activities: {
      deliverBudgetAlert: (input: BudgetAlertInput): Promise<BudgetAlertResult> => {
        delivered.push(input.alertId);
        return Promise.resolve({ alertId: input.alertId, status: 'delivered', attempts: 1, httpStatus: 200 });
      },
      recordBudgetAlertFailure: () => Promise.resolve(),
      ...createDispatchActivities({ dispatcher: dispatcherOn(env.client, { drainMinAgeSeconds: 0 }) }),
    },
  });
  running = worker.run();
});

afterAll(async () => {
  worker.shutdown();
  await running;
  await env.teardown();
  await db.destroy();
});

function dispatcherOn(client: Pick<Client, 'workflow'>, opts: Partial<DispatcherDeps> = {}) {
  const registry = opts.metrics ? undefined : new Registry();
  return createDispatcher({
    db,
    outbox: outbox(),
    client,
    taskQueue,
    metrics: opts.metrics ?? createBillingMetrics(registry!),
    log: createLogger('silent', 'dispatch-test'),
    ...opts,
  });
}

/** A dispatcher with its own metrics registry (to read the counters back). */
function observedDispatcher(opts: Partial<DispatcherDeps> = {}) {
  const registry = new Registry();
  return { registry, dispatcher: dispatcherOn(opts.client ?? env.client, { ...opts, metrics: createBillingMetrics(registry) }) };
}

function alertTask(tenantId = uniqueId('tenant')): DispatchTask {
  const id = `budget-alert:tenant:${tenantId}:80:1`;
  return {
    id,
    kind: DispatchKind.budgetAlert,
    tenantId,
    payload: {
      alertId: id,
      tenantId,
      apiKeyId: null,
      subjectKind: 'tenant',
      thresholdPercent: 80,
      delivery: { initialIntervalMs: 100, maximumIntervalMs: 200, giveUpAfterMs: 5000, attemptTimeoutMs: 1000 },
    },
  };
}

async function workflowExists(workflowId: string): Promise<boolean> {
  try {
    await env.client.workflow.getHandle(workflowId).describe();
    return true;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return false;
    throw err;
  }
}

/** How often the fake delivery ran for `alertId`, once its workflow has finished. */
async function runsOf(alertId: string): Promise<number> {
  await env.client.workflow.getHandle(alertId).result();
  return delivered.filter((id) => id === alertId).length;
}

describe('after commit (M5.1)', () => {
  it('writes the task in the transaction and starts its workflow once the transaction committed', async () => {
    const task = alertTask();
    const { dispatcher, registry } = observedDispatcher();
    let seenInside: boolean | undefined;

    const result = await dispatcher.transaction(async (trx, dispatch) => {
      dispatch(task);
      await trx.raw('SELECT 1');
      // Not yet committed: no workflow exists while the transaction is open.
      seenInside = await workflowExists(task.id);
      return 'done';
    });

    expect(result).toBe('done');
    expect(seenInside).toBe(false);
    expect(await runsOf(task.id)).toBe(1);
    expect((await outbox().find(task.id))?.dispatchedAt).toBeInstanceOf(Date);
    const described = await env.client.workflow.getHandle(task.id).describe();
    expect(described.type).toBe('budgetAlert');
    expect(described.typedSearchAttributes.get(SearchKeys.tenantId)).toBe(task.tenantId);
    expect(await metricValue(registry, 'billing_dispatch_sent_total', { kind: 'budgetAlert', result: 'started' })).toBe(1);
  });

  it('the outbox row commits with the transaction: a row written by the same transaction is there too', async () => {
    const task = alertTask();
    await dispatcherOn(env.client).transaction(async (trx, dispatch) => {
      await trx('dispatch_outbox').where({ task_id: task.id }).first(); // the transaction is real
      dispatch(task);
    });
    const row = await db('dispatch_outbox').where({ task_id: task.id }).first();
    expect(row).toMatchObject({ kind: 'budgetAlert', task_queue: taskQueue, tenant_id: task.tenantId, payload: task.payload });
    await env.client.workflow.getHandle(task.id).result();
  });
});

describe('rollback (M5.2)', () => {
  it('a transaction that throws sends nothing and leaves no outbox row', async () => {
    const task = alertTask();
    const tenantRow = uniqueId('rollback-t');
    const failure = new Error('the caller changed its mind');

    await expect(dispatcherOn(env.client).transaction(async (trx, dispatch) => {
      await trx('tenant_quota').insert({ tenant_id: tenantRow, name: 'rolled back', quota_limit_micros: 1 });
      dispatch(task);
      throw failure;
    })).rejects.toBe(failure);

    expect(await db('tenant_quota').where({ tenant_id: tenantRow }).first()).toBeUndefined();
    expect(await outbox().find(task.id)).toBeUndefined();
    expect(await workflowExists(task.id)).toBe(false);
    // Not even a later drain can send it: there is nothing to send.
    await dispatcherOn(env.client, { drainMinAgeSeconds: 0 }).drainOutbox({ taskQueue });
    expect(await workflowExists(task.id)).toBe(false);
    expect(delivered).not.toContain(task.id);
  });

  it('refuses a dispatch after the transaction callback returned', async () => {
    let leaked: Dispatch | undefined;
    await dispatcherOn(env.client).transaction((_trx, dispatch) => {
      leaked = dispatch;
      return Promise.resolve();
    });
    const task = alertTask();
    expect(() => leaked!(task)).toThrow(DispatchOutsideTransactionError);
    expect(await outbox().find(task.id)).toBeUndefined();
  });
});

describe('idempotent (M5.4)', () => {
  it('the same task dispatched by two transactions, and sent again by a drain, runs one workflow', async () => {
    const task = alertTask();
    const { dispatcher, registry } = observedDispatcher({ drainMinAgeSeconds: 0 });

    await dispatcher.transaction((_trx, dispatch) => Promise.resolve(dispatch(task)));
    const firstRun = (await env.client.workflow.getHandle(task.id).describe()).runId;
    await dispatcher.transaction((_trx, dispatch) => Promise.resolve(dispatch(task)));
    await env.client.workflow.getHandle(task.id).result();
    // As if the first send's outbox update had been lost: the drain sends it once more.
    await db('dispatch_outbox').where({ task_id: task.id }).update({ dispatched_at: null });
    const drained = await dispatcher.drainOutbox({ taskQueue });

    expect(drained).toMatchObject({ started: 0, failed: 0 });
    expect(drained.duplicates).toBeGreaterThanOrEqual(1);
    expect((await env.client.workflow.getHandle(task.id).describe()).runId).toBe(firstRun);
    expect(await runsOf(task.id)).toBe(1);
    expect(await metricValue(registry, 'billing_dispatch_sent_total', { kind: 'budgetAlert', result: 'started' })).toBe(1);
    expect(await metricValue(registry, 'billing_dispatch_sent_total', { kind: 'budgetAlert', result: 'duplicate' })).toBeGreaterThanOrEqual(2);
    expect(await db('dispatch_outbox').where({ task_id: task.id }).count<{ count: string }[]>('* as count')).toEqual([{ count: '1' }]);
  });
});

describe('nothing lost between commit and send', () => {
  it('a commit whose send never happened (crash) is delivered once by the drain', async () => {
    const task = alertTask();
    const dispatcher = dispatcherOn(env.client, { drainMinAgeSeconds: 0 });

    // deferSend: the transaction commits and nothing is sent, exactly the state a crash right after the commit leaves.
    await dispatcher.transaction((_trx, dispatch) => Promise.resolve(dispatch(task)), { deferSend: true });
    expect(await workflowExists(task.id)).toBe(false);
    expect(await outbox().find(task.id)).toEqual({ dispatchedAt: null, attempts: 0, lastError: null });

    const first = await dispatcher.drainOutbox({ taskQueue });
    expect(first).toMatchObject({ started: 1, duplicates: 0, failed: 0, batches: 1 });
    const second = await dispatcher.drainOutbox({ taskQueue });
    expect(second).toMatchObject({ started: 0, duplicates: 0, failed: 0, batches: 0 });
    expect(await runsOf(task.id)).toBe(1);
  });

  it('leaves rows younger than the minimum age to their own after-commit send', async () => {
    const task = alertTask();
    await dispatcherOn(env.client).transaction((_trx, dispatch) => Promise.resolve(dispatch(task)), { deferSend: true });

    const report = await dispatcherOn(env.client, { drainMinAgeSeconds: 3600 }).drainOutbox({ taskQueue });
    expect(report.batches).toBe(0);
    expect(await workflowExists(task.id)).toBe(false);
    await dispatcherOn(env.client, { drainMinAgeSeconds: 0 }).drainOutbox({ taskQueue });
    expect(await runsOf(task.id)).toBe(1);
  });

  it('a send that fails (Temporal unreachable) never fails the caller; the row keeps the error and the drain sends it later', async () => {
    const task = alertTask();
    const down = { workflow: { start: () => Promise.reject(new Error('14 UNAVAILABLE: connection refused')) } } as unknown as Pick<Client, 'workflow'>;
    const { dispatcher, registry } = observedDispatcher({ client: down });

    await expect(dispatcher.transaction((_trx, dispatch) => Promise.resolve(dispatch(task)).then(() => 42))).resolves.toBe(42);

    expect(await outbox().find(task.id)).toEqual({ dispatchedAt: null, attempts: 1, lastError: '14 UNAVAILABLE: connection refused' });
    expect(await metricValue(registry, 'billing_dispatch_failures_total', { kind: 'budgetAlert' })).toBe(1);
    expect(await workflowExists(task.id)).toBe(false);
    // Temporal is back.
    const report = await dispatcherOn(env.client, { drainMinAgeSeconds: 0 }).drainOutbox({ taskQueue });
    expect(report.started).toBe(1);
    expect(await runsOf(task.id)).toBe(1);
    expect((await outbox().find(task.id))?.attempts).toBe(2);
  });

  it('the drain runs as an activity of the outboxDrainWorkflow of the outbox-drain Schedule', async () => {
    const task = alertTask();
    await dispatcherOn(env.client).transaction((_trx, dispatch) => Promise.resolve(dispatch(task)), { deferSend: true });

    await env.client.workflow.execute(outboxDrainWorkflow, { workflowId: uniqueId('drain'), taskQueue });

    expect((await outbox().find(task.id))?.dispatchedAt).toBeInstanceOf(Date);
    expect(await runsOf(task.id)).toBe(1);
  });
});

describe('batches (M5.3)', () => {
  /** A client that counts starts and the most in flight at once, passing each to the real one. */
  function countingClient() {
    const seen = { starts: 0, inFlight: 0, maxInFlight: 0 };
    const start: Client['workflow']['start'] = async (...args: Parameters<Client['workflow']['start']>) => {
      seen.starts += 1;
      seen.inFlight += 1;
      seen.maxInFlight = Math.max(seen.maxInFlight, seen.inFlight);
      try {
        return await env.client.workflow.start(...args);
      } finally {
        seen.inFlight -= 1;
      }
    };
    return { seen, client: { workflow: { start } } as unknown as Pick<Client, 'workflow'> };
  }

  it('sends 25 tasks of one transaction as 3 batches of at most 10 concurrent starts', async () => {
    const tasks = Array.from({ length: 25 }, () => alertTask());
    const { seen, client } = countingClient();

    await dispatcherOn(client, { batchSize: 10 }).transaction((_trx, dispatch) => Promise.resolve(tasks.forEach((t) => dispatch(t))));

    expect(seen).toEqual({ starts: 25, inFlight: 0, maxInFlight: 10 });
    for (const task of tasks) expect(await runsOf(task.id)).toBe(1);
    const undispatched = await db('dispatch_outbox').whereIn('task_id', tasks.map((t) => t.id)).whereNull('dispatched_at').count<{ count: string }[]>('* as count');
    expect(undispatched).toEqual([{ count: '0' }]);
  });

  it('drains 25 deferred tasks in 3 batches (10, 10, 5)', async () => {
    const tasks = Array.from({ length: 25 }, () => alertTask());
    await dispatcherOn(env.client).transaction((_trx, dispatch) => Promise.resolve(tasks.forEach((t) => dispatch(t))), { deferSend: true });
    const { seen, client } = countingClient();

    const report = await dispatcherOn(client, { batchSize: 10, drainMinAgeSeconds: 0 }).drainOutbox({ taskQueue });

    expect(report).toMatchObject({ started: 25, duplicates: 0, failed: 0, batches: 3 });
    expect(seen.maxInFlight).toBe(10);
    for (const task of tasks) expect(await runsOf(task.id)).toBe(1);
  });
});

describe('outbox housekeeping and gauges', () => {
  it('reports the depth and the oldest age of undispatched rows, and prunes dispatched rows past retention', async () => {
    const task = alertTask();
    await dispatcherOn(env.client).transaction((_trx, dispatch) => Promise.resolve(dispatch(task)), { deferSend: true });
    await db('dispatch_outbox').where({ task_id: task.id }).update({ created_at: db.raw("now() - interval '90 seconds'") });

    const stats = await outbox().stats();
    expect(stats.depth).toBeGreaterThanOrEqual(1);
    expect(stats.oldestSeconds).toBeGreaterThanOrEqual(90);
    const registry = new Registry();
    createBillingMetrics(registry, { outbox: () => outbox().stats() });
    expect(await metricValue(registry, 'billing_dispatch_outbox_oldest_age_seconds')).toBeGreaterThanOrEqual(90);

    await dispatcherOn(env.client, { drainMinAgeSeconds: 0 }).drainOutbox({ taskQueue });
    expect(await runsOf(task.id)).toBe(1);
    await db('dispatch_outbox').where({ task_id: task.id }).update({ dispatched_at: db.raw("now() - interval '2 days'") });
    const pruned = await dispatcherOn(env.client, { retentionSeconds: 24 * 3600 }).drainOutbox({ taskQueue });
    expect(pruned.pruned).toBeGreaterThanOrEqual(1);
    expect(await outbox().find(task.id)).toBeUndefined();
  });
});
