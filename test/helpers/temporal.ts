/**
 * Ready Temporal test environments for engineers writing workflow tests:
 *
 *   const env = await devServerEnv();              // the dev server global setup started
 *   const env = await timeSkippingEnv();           // Java time-skipping server (timers in ms)
 *   await withWorker(env, { workflowsPath, activities }, async (taskQueue) => { ... });
 *
 * Both use binaries from the project venv (`existing-path`): nothing is downloaded.
 * Clients and workers use the app's data converter (src/codec/: encrypted payloads and
 * failure messages, with the test config's keys) unless a test passes its own.
 */
import path from 'node:path';
import type { DataConverter } from '@temporalio/common';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { installTemporalRuntime } from '../../src/roles/worker';
import { billingDataConverter, FAILURE_CONVERTER_PATH } from '../../src/codec/data-converter';
import { temporalTestServerPath } from '../../src/embedded/temporal';
import { SEARCH_ATTRIBUTES } from '../../src/workflows/search-attributes';
import { temporalAddress, testConfig, uniqueId } from './services';

// A passing run prints its summary only: the SDK logs at TEST_LOG_LEVEL, silent by default (test/setup/global-setup.ts).
installTemporalRuntime(testConfig().LOG_LEVEL);

/** The data converter of the app's clients and workers, with the test config's codec keys. */
export function testDataConverter(): DataConverter {
  return billingDataConverter(testConfig().payloadCodecKeys);
}

export interface TestEnvOptions {
  /** The client's data converter. @default testDataConverter() */
  dataConverter?: DataConverter;
}

/** An environment on the real dev server started by global setup (Schedules, visibility, search attributes). */
export function devServerEnv(opts: TestEnvOptions = {}): Promise<TestWorkflowEnvironment> {
  return TestWorkflowEnvironment.createFromExistingServer({
    address: temporalAddress(),
    namespace: testConfig().TEMPORAL_NAMESPACE,
    client: { dataConverter: opts.dataConverter ?? testDataConverter() },
  });
}

/** A fresh time-skipping test server with our search attributes registered. */
export async function timeSkippingEnv(opts: TestEnvOptions = {}): Promise<TestWorkflowEnvironment> {
  const env = await TestWorkflowEnvironment.createTimeSkipping({
    server: { executable: { type: 'existing-path', path: temporalTestServerPath(testConfig().rootDir) } },
    client: { dataConverter: opts.dataConverter ?? testDataConverter() },
  });
  await env.connection.operatorService.addSearchAttributes({
    namespace: env.namespace ?? 'default',
    searchAttributes: Object.fromEntries(Object.keys(SEARCH_ATTRIBUTES).map((name) => [name, 2 /* KEYWORD */])),
  });
  return env;
}

const bundles = new Map<string, Promise<WorkflowBundleWithSourceMap>>();

/** Bundles workflow code once per path per test file (bundling takes seconds), with the app's failure converter. */
export function workflowBundle(workflowsPath: string): Promise<WorkflowBundleWithSourceMap> {
  const key = path.resolve(workflowsPath);
  let bundle = bundles.get(key);
  if (!bundle) {
    bundle = bundleWorkflowCode({ workflowsPath: key, failureConverterPath: FAILURE_CONVERTER_PATH, logger: { log: () => undefined, trace: () => undefined, debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined } });
    bundles.set(key, bundle);
  }
  return bundle;
}

export interface TestWorkerOptions {
  workflowsPath: string;
  activities?: object;
  taskQueue?: string;
  /** The worker's data converter. @default testDataConverter() */
  dataConverter?: DataConverter;
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
    dataConverter: opts.dataConverter ?? testDataConverter(),
  });
  return worker.runUntil(() => fn(taskQueue));
}
