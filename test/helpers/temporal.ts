/**
 * Ready Temporal test environments for engineers writing workflow tests:
 *
 *   const env = await devServerEnv();              // the dev server global setup started
 *   const env = await timeSkippingEnv();           // Java time-skipping server (timers in ms)
 *   await withWorker(env, { workflowsPath, activities }, async (taskQueue) => { ... });
 *
 * Both use binaries from the project venv (`existing-path`): nothing is downloaded.
 */
import path from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { installTemporalRuntime } from '../../src/roles/worker';
import { temporalTestServerPath } from '../../src/embedded/temporal';
import { SEARCH_ATTRIBUTES } from '../../src/workflows/search-attributes';
import { temporalAddress, testConfig, uniqueId } from './services';

// A passing run prints its summary only: the SDK logs at TEST_LOG_LEVEL, silent by default (test/setup/global-setup.ts).
installTemporalRuntime(testConfig().LOG_LEVEL);

/** An environment on the real dev server started by global setup (Schedules, visibility, search attributes). */
export function devServerEnv(): Promise<TestWorkflowEnvironment> {
  return TestWorkflowEnvironment.createFromExistingServer({
    address: temporalAddress(),
    namespace: testConfig().TEMPORAL_NAMESPACE,
  });
}

/** A fresh time-skipping test server with our search attributes registered. */
export async function timeSkippingEnv(): Promise<TestWorkflowEnvironment> {
  const env = await TestWorkflowEnvironment.createTimeSkipping({
    server: { executable: { type: 'existing-path', path: temporalTestServerPath(testConfig().rootDir) } },
  });
  await env.connection.operatorService.addSearchAttributes({
    namespace: env.namespace ?? 'default',
    searchAttributes: Object.fromEntries(Object.keys(SEARCH_ATTRIBUTES).map((name) => [name, 2 /* KEYWORD */])),
  });
  return env;
}

const bundles = new Map<string, Promise<WorkflowBundleWithSourceMap>>();

/** Bundles workflow code once per path per test file (bundling takes seconds). */
export function workflowBundle(workflowsPath: string): Promise<WorkflowBundleWithSourceMap> {
  const key = path.resolve(workflowsPath);
  let bundle = bundles.get(key);
  if (!bundle) {
    bundle = bundleWorkflowCode({ workflowsPath: key, logger: { log: () => undefined, trace: () => undefined, debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined } });
    bundles.set(key, bundle);
  }
  return bundle;
}

export interface TestWorkerOptions {
  workflowsPath: string;
  activities?: object;
  taskQueue?: string;
}

/** Runs `fn` while a worker polls a fresh task queue; the worker is shut down afterwards. */
export async function withWorker<T>(
  env: TestWorkflowEnvironment,
  opts: TestWorkerOptions,
  fn: (taskQueue: string) => Promise<T>,
): Promise<T> {
  const taskQueue = opts.taskQueue ?? uniqueId('tq');
  const worker = await Worker.create({
    connection: env.nativeConnection,
    namespace: env.namespace ?? 'default',
    taskQueue,
    workflowBundle: await workflowBundle(opts.workflowsPath),
    activities: opts.activities,
  });
  return worker.runUntil(() => fn(taskQueue));
}
