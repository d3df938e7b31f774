/**
 * Temporal history is encrypted (issue 8): what the app writes into a billed request's
 * history (the workflow input with the prompt, activity and update results with the
 * completion, failure messages) is unreadable to a client without the codec, readable with
 * it, survives a key rotation, and histories written before the codec still replay.
 *
 * A raw history is searched as text: every byte string in it decoded as UTF-8 (where a plain
 * JSON payload shows its content) plus its JSON form.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Client, WorkflowUpdateStage, type WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure, defaultPayloadConverter, type DataConverter, type Payload } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import type { History } from '@temporalio/common/lib/proto-utils';
import type { Knex } from 'knex';
import type { createActivities } from '../../src/activities';
import { billingDataConverter } from '../../src/codec/data-converter';
import { keyringOf } from '../../src/codec/keyring';
import { AesGcmPayloadCodec } from '../../src/codec/payload-codec';
import { billedRequest } from '../../src/workflows/billed-request';
import { billedRequestStart } from '../../src/workflows/client';
import {
  ADMISSION_UPDATE_ID,
  admissionUpdate,
  billedRequestWorkflowId,
  upstreamOutputUpdate,
  type AdmissionDecision,
  type BilledRequestInput,
  type UpstreamOutcome,
} from '../../src/workflows/definitions';
import { historyFromFixtureJSON, historyToFixtureJSON } from '../fixtures/history-json';
import { chat, startTestApp, TEST_MODEL, type TestApp } from '../helpers/app';
import { decodedHistoryText } from '../helpers/history-text';
import { testConfig, testDb, uniqueId } from '../helpers/services';
import { devServerEnv, testDataConverter, withWorker, workflowBundle } from '../helpers/temporal';

type Activities = ReturnType<typeof createActivities>;

const workflowsPath = require.resolve('../../src/workflows');
const KEY_A = Buffer.alloc(32, 0xa1).toString('base64');
const KEY_B = Buffer.alloc(32, 0xb2).toString('base64');
const ringA = keyringOf({ a: KEY_A }, 'a');
const ringAB = keyringOf({ a: KEY_A, b: KEY_B }, 'b');
const ringB = keyringOf({ b: KEY_B }, 'b');

const ADMITTED: AdmissionDecision = { admitted: true, reservedMicros: 210, path: 'redis', duplicate: false };
const COMPLETED: UpstreamOutcome = { status: 'completed', promptTokens: 10, completionTokens: 20, tokenSource: 'upstream', channel: 'mock' };

/** Every byte string of a history as UTF-8, and its JSON: what anyone with access to Temporal could read. */
function readableText(history: History): string {
  const parts: string[] = [historyToFixtureJSON(history)];
  const walk = (value: unknown): void => {
    if (value instanceof Uint8Array) parts.push(Buffer.from(value).toString('utf8'));
    else if (typeof value === 'string') parts.push(value);
    else if (Array.isArray(value)) value.forEach(walk);
    else if (typeof value === 'object' && value !== null) Object.values(value).forEach(walk);
  };
  walk(history);
  return parts.join('\n');
}

function startInput(history: History): Payload[] {
  const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
  return started?.input?.payloads ?? [];
}

async function decodedStartInput(history: History, codec: AesGcmPayloadCodec): Promise<BilledRequestInput> {
  const [payload] = await codec.decode(startInput(history));
  return defaultPayloadConverter.fromPayload<BilledRequestInput>(payload!);
}

/** A billed input; the marker rides in conversationId, the one free-text field left in the input (the prompt is in the body store). */
function billedInput(marker: string, overrides: Partial<BilledRequestInput> = {}): BilledRequestInput {
  const requestId = uniqueId('req-codec');
  return {
    requestId,
    tenantId: 'tenant-codec',
    apiKeyId: 'key-codec',
    model: 'gpt-test',
    price: { model: 'gpt-test', inputPriceMicrosPerMtok: 1_000_000, outputPriceMicrosPerMtok: 2_000_000, maxOutputTokens: 100 },
    promptTokens: 10,
    maxOutputTokens: 100,
    reservedMicros: 210,
    stream: false,
    includeUsage: false,
    relayMode: 'redis',
    conversationId: `conversation ${marker}`,
    bodyRef: { requestId },
    ...overrides,
  };
}

function fakeSteps(overrides: Partial<Activities> = {}): Activities {
  return {
    quotaCheckStep: () => Promise.resolve(ADMITTED),
    routingStep: () => Promise.resolve('mock'),
    upstreamCallStep: () => Promise.resolve(COMPLETED),
    billingStep: () => Promise.resolve({ status: 'committed', costMicros: 50, deltaMicros: -160 }),
    conversationAppendStep: () => Promise.resolve({ appended: true, firstSeq: 0, count: 2, fence: 1 }),
    ...overrides,
  };
}

/** Runs one billed request on fake steps; relay mode 'result' also takes the output through the update. */
async function runBilledRequest(env: TestWorkflowEnvironment, input: BilledRequestInput, steps: Activities, dataConverter: DataConverter): Promise<{ history: History; output?: UpstreamOutcome | null }> {
  let openUpstream: () => void = () => undefined;
  const upstreamOpened = new Promise<void>((resolve) => {
    openUpstream = resolve;
  });
  const held: Activities = {
    ...steps,
    upstreamCallStep: async (i, channel) => {
      if (input.relayMode === 'result') await upstreamOpened;
      return steps.upstreamCallStep(i, channel);
    },
  };
  return withWorker(env, { workflowsPath, activities: held, dataConverter }, async (taskQueue) => {
    const startWorkflowOperation = billedRequestStart(input, taskQueue);
    await env.client.workflow.executeUpdateWithStart(admissionUpdate, { updateId: ADMISSION_UPDATE_ID, startWorkflowOperation });
    const handle: WorkflowHandle<typeof billedRequest> = await startWorkflowOperation.workflowHandle();
    let output: UpstreamOutcome | null | undefined;
    if (input.relayMode === 'result') {
      const update = await handle.startUpdate(upstreamOutputUpdate, { updateId: 'output', waitForStage: WorkflowUpdateStage.ACCEPTED });
      openUpstream();
      output = await update.result();
    }
    await handle.result();
    return { history: await handle.fetchHistory(), output };
  });
}

describe('Temporal history is encrypted (issue 8)', () => {
  let env: TestWorkflowEnvironment;
  /** A client on the same connection without the codec: what the Web UI shows without the codec server. */
  let plainClient: Client;
  const codec = new AesGcmPayloadCodec(testConfig().payloadCodecKeys);

  beforeAll(async () => {
    env = await devServerEnv();
    plainClient = new Client({ connection: env.connection, namespace: env.namespace ?? 'default' });
  });
  afterAll(async () => {
    await env?.teardown();
  });

  describe('through the gateway (JSON and SSE)', () => {
    let app: TestApp;
    let db: Knex;
    beforeAll(async () => {
      app = await startTestApp();
      db = testDb();
    }, 60_000);
    afterAll(async () => {
      await app?.stop();
      await db?.destroy();
    });

    it.each([
      ['JSON', false],
      ['stream', true],
    ])('%s: the raw history holds no prompt, completion or API key; decoded with the codec it holds no prompt or completion either', async (_mode, stream) => {
      const t = await app.tenant();
      const marker = `prompt-marker-${uniqueId('p')}`;
      const res = await chat(app, t.key, { model: TEST_MODEL, stream, messages: [{ role: 'user', content: `tell me about ${marker}` }] });
      expect(res.status).toBe(200);
      const completion = stream
        ? res.text.split('\n').filter((l) => l.startsWith('data: {')).map((l) => (JSON.parse(l.slice(6)) as { choices: Array<{ delta: { content?: string } }> }).choices[0]?.delta.content ?? '').join('')
        : (res.json() as { choices: Array<{ message: { content: string } }> }).choices[0]!.message.content;
      expect(completion.split(' ').length).toBeGreaterThan(3);
      const workflowId = billedRequestWorkflowId(res.headers.get('x-request-id')!);
      await env.client.workflow.getHandle(workflowId).result();

      const history = await plainClient.workflow.getHandle(workflowId).fetchHistory();
      const raw = readableText(history);
      expect(raw).not.toContain(marker);
      expect(raw).not.toContain(completion);
      expect(raw).not.toContain(t.key);
      expect(raw).toContain('binary/encrypted');

      const input = await decodedStartInput(history, codec);
      expect(input.stream).toBe(stream);
      expect(input.bodyRef).toEqual({ requestId: input.requestId });
      // The body store keeps the prompt out of history altogether (issue 8, item 1).
      const decoded = await decodedHistoryText(history, codec);
      expect(decoded).toContain(input.requestId);
      expect(decoded).not.toContain(marker);
      expect(decoded).not.toContain(completion);
      // Settled: the body left the store.
      expect(await db('request_body').where({ request_id: input.requestId })).toEqual([]);
    });
  });

  it('relay mode result: the update and activity results carry only the output reference, encrypted', async () => {
    const marker = `prompt-marker-${uniqueId('r')}`;
    const input = billedInput(marker, { relayMode: 'result' });
    const outputRef = { requestId: input.requestId };
    const { history, output } = await runBilledRequest(env, input, fakeSteps({
      upstreamCallStep: () => Promise.resolve({ ...COMPLETED, outputRef }),
    }), testDataConverter());
    expect(output?.outputRef).toEqual(outputRef); // the API reads the output from the body store
    expect(output?.relayed).toBeUndefined();
    const raw = readableText(history);
    expect(raw).not.toContain(marker);
    expect(history.events?.some((e) => e.workflowExecutionUpdateCompletedEventAttributes)).toBe(true);
  });

  it('failure messages and stack traces are encrypted (encodeCommonAttributes)', async () => {
    const secret = `failure-marker-${uniqueId('f')}`;
    const { history } = await runBilledRequest(env, billedInput('x'), fakeSteps({
      upstreamCallStep: () => Promise.reject(ApplicationFailure.nonRetryable(`upstream answered HTTP 400: ${secret}`, 'UpstreamRejectedError')),
      billingStep: () => Promise.resolve({ status: 'voided', costMicros: 0, deltaMicros: -210 }),
    }), testDataConverter());
    const failed = history.events?.find((e) => e.activityTaskFailedEventAttributes)?.activityTaskFailedEventAttributes?.failure;
    expect(failed?.message).toBe('Encoded failure');
    expect(failed?.encodedAttributes?.metadata?.encoding && Buffer.from(failed.encodedAttributes.metadata.encoding).toString()).toBe('binary/encrypted');
    // The error type is not a secret and stays readable (the retry policy matches on it).
    expect(failed?.applicationFailureInfo?.type).toBe('UpstreamRejectedError');
    expect(readableText(history)).not.toContain(secret);
  });

  it('control: the same search finds the prompt in a history written without the codec', async () => {
    const marker = `prompt-marker-${uniqueId('n')}`;
    const plainEnv = await devServerEnv({ dataConverter: {} });
    try {
      const { history } = await runBilledRequest(plainEnv, billedInput(marker), fakeSteps(), {});
      expect(readableText(history)).toContain(marker);
    } finally {
      await plainEnv.teardown();
    }
  });

  describe('key rotation', () => {
    let history: History;
    let workflowId: string;
    const marker = `prompt-marker-${uniqueId('k')}`;

    beforeAll(async () => {
      const envA = await devServerEnv({ dataConverter: billingDataConverter(ringA) });
      try {
        const input = billedInput(marker, { relayMode: 'result' });
        workflowId = billedRequestWorkflowId(input.requestId);
        ({ history } = await runBilledRequest(envA, input, fakeSteps({
          upstreamCallStep: () => Promise.resolve({ ...COMPLETED, relayed: [{ type: 'done' }] }),
        }), billingDataConverter(ringA)));
      } finally {
        await envA.teardown();
      }
    });

    async function replay(dataConverter: DataConverter): Promise<Error | undefined> {
      const results = [];
      for await (const r of Worker.runReplayHistories({ workflowBundle: await workflowBundle(workflowsPath), replayName: 'codec-rotation', dataConverter }, [{ workflowId, history }])) results.push(r);
      expect(results).toHaveLength(1);
      return results[0]!.error;
    }

    it('a history written under key A replays and decodes once the active key is B (A kept for reading)', async () => {
      expect(readableText(history)).not.toContain(marker);
      expect(await replay(billingDataConverter(ringAB))).toBeUndefined();
      expect((await decodedStartInput(history, new AesGcmPayloadCodec(ringAB))).conversationId).toContain(marker);
    });

    it('a codec without key A refuses it with a clear error', async () => {
      await expect(decodedStartInput(history, new AesGcmPayloadCodec(ringB))).rejects.toThrow('payload encrypted with key id "a", which is not among the configured keys (b)');
      expect(await replay(billingDataConverter(ringB))).toBeDefined();
    });
  });

  it('a history recorded before the codec (plain payloads) still replays with the codec in place', async () => {
    const file = path.resolve(__dirname, '..', 'fixtures', 'histories-before-codec', 'settled-result-relay.json');
    const history = historyFromFixtureJSON(JSON.parse(fs.readFileSync(file, 'utf8')));
    expect(Buffer.from(startInput(history)[0]!.metadata!.encoding!).toString()).toBe('json/plain');
    const results = [];
    for await (const r of Worker.runReplayHistories({ workflowBundle: await workflowBundle(workflowsPath), replayName: 'codec-before', dataConverter: testDataConverter() }, [{ workflowId: 'before-codec', history }])) results.push(r);
    expect(results.map((r) => r.error)).toEqual([undefined]);
  });
});
