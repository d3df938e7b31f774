/**
 * Records one event history per representative path of the billed-request
 * workflow into test/fixtures/histories/<name>.json, for the replay test
 * (test/workflows/replay.test.ts). Re-record only when a workflow change is
 * meant to be incompatible with running workflows (and then ship it behind a
 * patch or a new workflow type): the old fixtures are what running workflows look like.
 *
 * Run: npx tsx scripts/record-histories.ts   (uses TEMPORAL_ADDRESS if set, else starts an ephemeral dev server)
 * RECORD_ONLY=<name> records one scenario; RECORD_WORKFLOWS_PATH=<dir> records with another
 * copy of src/workflows (e.g. an older commit's, checked out inside the repository so its
 * imports resolve), which is how a history "from before a change" is made for a patched() change.
 *
 * The activities are small fakes: a history records their results, not their code.
 * Client and worker use the app's data converter (src/codec/), so payloads are encrypted
 * with PAYLOAD_CODEC_KEY_ID (the development key by default, which the tests also use).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Client, Connection, WorkflowUpdateStage, type WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure, type DataConverter } from '@temporalio/common';
import { DefaultLogger, NativeConnection, Runtime, Worker, bundleWorkflowCode } from '@temporalio/worker';
import type { createActivities } from '../src/activities';
import { billedRequestStart } from '../src/workflows/client';
import { loadConfig } from '../src/config';
import { billingDataConverter, FAILURE_CONVERTER_PATH } from '../src/codec/data-converter';
import { freePort } from '../src/embedded/child';
import { startEmbeddedTemporal, type EmbeddedTemporal } from '../src/embedded/temporal';
import { billedRequest } from '../src/workflows/billed-request';
import {
  ADMISSION_UPDATE_ID,
  admissionUpdate,
  upstreamOutputUpdate,
  type AdmissionDecision,
  type BilledRequestInput,
  type SettlementResult,
  type UpstreamOutcome,
} from '../src/workflows/definitions';
import { historyToFixtureJSON } from '../test/fixtures/history-json';

type Activities = ReturnType<typeof createActivities>;

const HISTORIES_DIR = path.resolve(__dirname, '..', 'test', 'fixtures', 'histories');
const WORKFLOWS_PATH = process.env.RECORD_WORKFLOWS_PATH ? path.resolve(process.env.RECORD_WORKFLOWS_PATH) : path.resolve(__dirname, '..', 'src', 'workflows');

const ADMITTED: AdmissionDecision = { admitted: true, reservedMicros: 210, path: 'redis', duplicate: false };
const COMPLETED: UpstreamOutcome = { status: 'completed', promptTokens: 10, completionTokens: 20, tokenSource: 'upstream', channel: 'mock' };
const COMMITTED: SettlementResult = { status: 'committed', costMicros: 50, deltaMicros: -160 };

interface Scenario {
  /** The fixture's file name (without .json). */
  name: string;
  input: Partial<BilledRequestInput>;
  activities: Partial<Activities>;
  /** Relay mode 'result': the API waits for the output through upstreamOutputUpdate. */
  awaitsOutput?: boolean;
}

/** The paths a running billed request can take; each one's history must keep replaying. */
const SCENARIOS: readonly Scenario[] = [
  { name: 'settled-stream', input: { stream: true, relayMode: 'redis' }, activities: {} },
  {
    name: 'settled-result-relay',
    input: { stream: false, includeUsage: false, relayMode: 'result' },
    activities: { upstreamCallStep: () => Promise.resolve({ ...COMPLETED, relayed: [{ type: 'chunk', data: { id: 'c1' } }] }) },
    awaitsOutput: true,
  },
  {
    name: 'denied',
    input: {},
    activities: { quotaCheckStep: () => Promise.resolve({ admitted: false, reason: 'insufficient_quota', path: 'redis' }) },
  },
  {
    name: 'upstream-failed-voided',
    input: {},
    activities: {
      upstreamCallStep: () => Promise.reject(ApplicationFailure.nonRetryable('upstream answered HTTP 400', 'UpstreamRejectedError')),
      billingStep: () => Promise.resolve({ status: 'voided', costMicros: 0, deltaMicros: -210 }),
    },
  },
  // Recorded with the workflow code from before ConversationAppendStep (commit 9e2fc08): a committed
  // request of a conversation whose history has no append step must still replay (patched()).
  { name: 'settled-conversation-before-append', input: { stream: true, relayMode: 'redis', conversationId: 'conv-replay' }, activities: {} },
  {
    name: 'client-cancelled',
    input: {},
    activities: {
      upstreamCallStep: () => Promise.resolve({ status: 'client_cancelled', promptTokens: 10, completionTokens: 4, tokenSource: 'tiktoken', channel: 'mock' }),
      // ceil((10 * 1_000_000 + 4 * 2_000_000) / 1_000_000) = 18 micros for the delivered part
      billingStep: () => Promise.resolve({ status: 'committed', costMicros: 18, deltaMicros: -192 }),
    },
  },
  // Recorded with the workflow code of commit 5c8d8d0, from before relay mode 'result' appended to
  // conversations: such a committed request appended nothing then; its history must still replay
  // (it never reached patched('conversation-append-step'), so it has no marker).
  {
    name: 'settled-conversation-result-mode-before-patch',
    input: { stream: false, includeUsage: false, relayMode: 'result', conversationId: 'conv-replay' },
    activities: { upstreamCallStep: () => Promise.resolve({ ...COMPLETED, outputRef: { requestId: 'replay-output' } }) },
    awaitsOutput: true,
  },
  // Issue 11's operations: the same workflow, another upstream call; their histories must keep replaying too.
  {
    name: 'settled-embeddings',
    input: { operation: 'embeddings', stream: false, includeUsage: false, maxOutputTokens: 0, reservedMicros: 10 },
    activities: {
      upstreamCallStep: () => Promise.resolve({ status: 'completed', promptTokens: 10, completionTokens: 0, tokenSource: 'upstream', channel: 'mock' }),
      billingStep: () => Promise.resolve({ status: 'committed', costMicros: 10, deltaMicros: 0 }),
    },
  },
  { name: 'settled-responses-stream', input: { operation: 'responses', stream: true, relayMode: 'redis' }, activities: {} },
];

function inputFor(scenario: Scenario): BilledRequestInput {
  const requestId = `replay-${scenario.name}-${Date.now().toString(36)}`;
  return {
    requestId,
    tenantId: 'tenant-replay',
    apiKeyId: 'key-replay',
    model: 'gpt-test',
    price: { model: 'gpt-test', inputPriceMicrosPerMtok: 1_000_000, outputPriceMicrosPerMtok: 2_000_000, maxOutputTokens: 100 },
    promptTokens: 10,
    maxOutputTokens: 100,
    reservedMicros: 210,
    stream: true,
    includeUsage: true,
    relayMode: 'redis',
    bodyRef: { requestId },
    ...scenario.input,
  };
}

async function record(client: Client, connection: NativeConnection, namespace: string, workflowBundle: Awaited<ReturnType<typeof bundleWorkflowCode>>, dataConverter: DataConverter, scenario: Scenario): Promise<string> {
  const input = inputFor(scenario);
  const taskQueue = `record-${scenario.name}-${Date.now().toString(36)}`;
  // Holds the upstream step until the output update is accepted (an update reaching a closing workflow is aborted).
  let openUpstream: () => void = () => undefined;
  const upstreamOpened = new Promise<void>((resolve) => {
    openUpstream = resolve;
  });
  const upstreamStep = scenario.activities.upstreamCallStep ?? (() => Promise.resolve(COMPLETED));
  const activities: Activities = {
    quotaCheckStep: scenario.activities.quotaCheckStep ?? (() => Promise.resolve(ADMITTED)),
    routingStep: scenario.activities.routingStep ?? (() => Promise.resolve('mock')),
    upstreamCallStep: async (i, channel) => {
      if (scenario.awaitsOutput) await upstreamOpened;
      return upstreamStep(i, channel);
    },
    billingStep: scenario.activities.billingStep ?? (() => Promise.resolve(COMMITTED)),
    conversationAppendStep: scenario.activities.conversationAppendStep ?? (() => Promise.resolve({ appended: false, reason: 'already_appended' })),
  };
  const worker = await Worker.create({ connection, namespace, taskQueue, workflowBundle, activities, dataConverter });
  const handle = await worker.runUntil(async (): Promise<WorkflowHandle<typeof billedRequest>> => {
    const startWorkflowOperation = billedRequestStart(input, taskQueue);
    await client.workflow.executeUpdateWithStart(admissionUpdate, { updateId: ADMISSION_UPDATE_ID, startWorkflowOperation });
    const started = await startWorkflowOperation.workflowHandle();
    if (scenario.awaitsOutput) {
      const output = await started.startUpdate(upstreamOutputUpdate, { updateId: 'output', waitForStage: WorkflowUpdateStage.ACCEPTED });
      openUpstream();
      await output.result();
    }
    await started.result();
    return started;
  });
  const file = path.join(HISTORIES_DIR, `${scenario.name}.json`);
  fs.writeFileSync(file, `${historyToFixtureJSON(await handle.fetchHistory())}\n`);
  return file;
}

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const config = loadConfig();
  let embedded: EmbeddedTemporal | undefined;
  let address = config.TEMPORAL_ADDRESS;
  if (!address) {
    embedded = await startEmbeddedTemporal({ rootDir: config.rootDir, port: await freePort(), uiPort: await freePort(), namespace: config.TEMPORAL_NAMESPACE, headless: true });
    address = embedded.address;
  }
  const namespace = config.TEMPORAL_NAMESPACE;
  const connection = await Connection.connect({ address });
  const nativeConnection = await NativeConnection.connect({ address });
  try {
    const dataConverter = billingDataConverter(config.payloadCodecKeys);
    const client = new Client({ connection, namespace, dataConverter });
    const workflowBundle = await bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, failureConverterPath: FAILURE_CONVERTER_PATH, logger: new DefaultLogger('WARN') });
    fs.mkdirSync(HISTORIES_DIR, { recursive: true });
    for (const scenario of SCENARIOS.filter((s) => !process.env.RECORD_ONLY || s.name === process.env.RECORD_ONLY)) {
      const file = await record(client, nativeConnection, namespace, workflowBundle, dataConverter, scenario);
      process.stdout.write(`recorded ${path.relative(process.cwd(), file)}\n`);
    }
  } finally {
    await nativeConnection.close();
    await connection.close();
    await embedded?.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
