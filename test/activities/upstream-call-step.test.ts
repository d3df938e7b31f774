/**
 * UpstreamCallStep (M6, M8, docs/architecture.md, the lifecycle's UpstreamCallStep) in a MockActivityEnvironment, against
 * the real mock upstream over HTTP and the real Redis Stream relay: what reaches the
 * client, the usage billed for it and its source (M6.3), no retry once output was
 * delivered, and cancellation that really closes the upstream request.
 */
import type { Knex } from 'knex';
import { createHash } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { get_encoding } from 'tiktoken';
import { createUpstreamCallStep } from '../../src/activities/upstream-call-step';
import type { Redis } from '../../src/redis/client';
import type { RelayEntry } from '../../src/redis/request-relay';
import { UpstreamHttpError } from '../../src/upstream/errors';
import { startMockUpstream, type MockUpstream } from '../../src/upstream/mock/server';
import { createOpenAICompatibleProvider } from '../../src/upstream/openai-compatible';
import type { BilledRequestInput, UpstreamOutcome } from '../../src/workflows/definitions';
import { FailureType } from '../../src/workflows/failure-types';
import { testDb, testRedis, uniqueId } from '../helpers/services';
import { billedInput, stepDeps, type StepDeps } from '../helpers/activity-deps';

let redis: Redis;
let db: Knex;
let mock: MockUpstream;
let deps: StepDeps;
const cl100k = get_encoding('cl100k_base');
const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

beforeAll(async () => {
  redis = await testRedis();
  db = testDb();
  mock = await startMockUpstream({ port: 0 });
  deps = stepDeps(redis, db);
});
afterAll(async () => {
  await mock.close();
  await deps.relay.close();
  await db.destroy();
  redis.disconnect();
  cl100k.free();
});

const INTERRUPTED = { status: 502, message: 'upstream call was interrupted', type: 'upstream_error', code: 'upstream_error' };
const CLIENT_CLOSED = { status: 499, message: 'client closed the request', type: 'invalid_request_error', code: 'client_closed_request' };
/** What our admission estimate said the prompt costs (the tiktoken level uses it). */
const ESTIMATED_PROMPT = 21;

/** An activity context whose SDK logger stays quiet (the expected failures would flood the output). */
function activityEnv(attempt = 1): MockActivityEnvironment {
  return new MockActivityEnvironment({ attempt }, { logger: new DefaultLogger('ERROR') });
}

function upstreamCall() {
  return createUpstreamCallStep({ providers: { default: createOpenAICompatibleProvider({ baseUrl: mock.url }) }, relay: deps.relay, bodies: deps.bodies, metrics: deps.metrics, log: deps.log, pollIntervalMs: 20 });
}

/** The client bodies of request(), stored in the body store before the step runs (as the API does). */
const clientBodies = new Map<string, Record<string, unknown>>();

/** Runs one attempt of the step in `env` (run() itself cannot infer the activity's result type). */
async function callUpstream(env: MockActivityEnvironment, input: BilledRequestInput): Promise<UpstreamOutcome> {
  const body = clientBodies.get(input.requestId);
  if (body) await deps.bodies.put({ requestId: input.requestId, tenantId: input.tenantId, kind: 'request', body: Buffer.from(JSON.stringify(body)) });
  return env.run<[BilledRequestInput, string], UpstreamOutcome, ReturnType<typeof upstreamCall>>(upstreamCall(), input, 'default');
}

/** A request whose last user message carries the mock's directives. */
function request(prompt: string, overrides: Partial<BilledRequestInput> = {}): BilledRequestInput {
  const input = billedInput(uniqueId('up-t'), uniqueId('up-k'), {
    reservedMicros: 10_053,
    promptTokens: ESTIMATED_PROMPT,
    ...overrides,
  });
  clientBodies.set(input.requestId, { model: 'mock-small', messages: [{ role: 'user', content: prompt }], max_tokens: 1000 });
  return input;
}

/**
 * The mock's prompt usage (the gateway's chat formula), counted here for the one
 * user message of request(): reply priming 3, then 3 per message + role + content.
 */
function mockPromptTokens(prompt: string): number {
  return 3 + 3 + cl100k.encode('user').length + cl100k.encode(prompt).length;
}

function relayed(input: BilledRequestInput): Promise<RelayEntry[]> {
  return deps.relay.entries(input.tenantId, input.requestId);
}

/** The text the client received through chunk entries. */
function chunkText(entries: RelayEntry[]): string {
  return entries
    .filter((e) => e.type === 'chunk')
    .map((e) => (e.data as { choices: Array<{ delta: { content?: string } }> }).choices.map((c) => c.delta.content ?? '').join(''))
    .join('');
}

async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('UpstreamCallStep: relaying and usage (M6)', () => {
  it('streams: relays every chunk (without upstream usage), then our usage entry and done; usage source upstream', async () => {
    const prompt = 'hello ledger [mock:tokens=5]';
    const input = request(prompt);

    const outcome = await callUpstream(activityEnv(), input);

    const promptTokens = mockPromptTokens(prompt);
    expect(outcome).toEqual({ status: 'completed', promptTokens, completionTokens: 5, tokenSource: 'upstream', channel: 'default' });
    const entries = await relayed(input);
    // 5 token chunks + the finish_reason chunk; the upstream's usage-only chunk is not relayed.
    expect(entries.map((e) => e.type)).toEqual(['chunk', 'chunk', 'chunk', 'chunk', 'chunk', 'chunk', 'usage', 'done']);
    expect(cl100k.encode(chunkText(entries)).length).toBe(5);
    expect(entries.filter((e) => e.type === 'chunk').every((e) => !('usage' in (e.data as object)))).toBe(true);
    expect(entries[6]).toEqual({ type: 'usage', data: { prompt_tokens: promptTokens, completion_tokens: 5, total_tokens: promptTokens + 5 } });
  });

  it('[mock:omit_usage]: counts the delivered text with tiktoken (source tiktoken, exact count) and the estimated prompt', async () => {
    const input = request('count me [mock:omit_usage][mock:tokens=7]');

    const outcome = await callUpstream(activityEnv(), input);

    expect(outcome).toEqual({ status: 'completed', promptTokens: ESTIMATED_PROMPT, completionTokens: 7, tokenSource: 'tiktoken', channel: 'default' });
    const entries = await relayed(input);
    expect(cl100k.encode(chunkText(entries)).length).toBe(7);
    expect(entries.slice(-2)).toEqual([{ type: 'usage', data: { prompt_tokens: ESTIMATED_PROMPT, completion_tokens: 7, total_tokens: 28 } }, { type: 'done' }]);
  });

  it('non-streaming: writes one response entry carrying our usage, then done', async () => {
    const prompt = 'plain answer [mock:tokens=4]';
    const input = request(prompt, { stream: false, includeUsage: false });

    const outcome = await callUpstream(activityEnv(), input);

    const promptTokens = mockPromptTokens(prompt);
    expect(outcome).toEqual({ status: 'completed', promptTokens, completionTokens: 4, tokenSource: 'upstream', channel: 'default' });
    const entries = await relayed(input);
    expect(entries.map((e) => e.type)).toEqual(['response', 'done']);
    const response = entries[0]!.type === 'response' ? (entries[0]!.data as { object: string; choices: Array<{ message: { content: string } }>; usage: unknown }) : undefined;
    expect(response?.object).toBe('chat.completion');
    expect(cl100k.encode(response?.choices[0]?.message.content ?? '').length).toBe(4);
    expect(response?.usage).toEqual({ prompt_tokens: promptTokens, completion_tokens: 4, total_tokens: promptTokens + 4 });
  });

  it('relay mode "result": nothing goes to Redis, the output goes to the body store and the outcome carries only its reference', async () => {
    const input = request('no relay [mock:tokens=2]', { relayMode: 'result' });

    const outcome = await callUpstream(activityEnv(), input);

    expect(outcome).toMatchObject({ status: 'completed', completionTokens: 2, tokenSource: 'upstream', outputRef: { requestId: input.requestId } });
    expect(outcome.relayed).toBeUndefined();
    const stored = await deps.bodies.get(input.requestId, 'output');
    expect((JSON.parse(stored!.toString('utf8')) as RelayEntry[]).map((e) => e.type)).toEqual(['chunk', 'chunk', 'chunk', 'usage', 'done']);
    expect(await relayed(input)).toEqual([]);
    await deps.bodies.delete(input.requestId, 'output');
  });

  it('sends the stored body upstream with our output cap and no client stream options (upstreamBody)', async () => {
    const input = request('capped [mock:tokens=2]', { maxOutputTokens: 7, stream: false });
    const client = { model: 'mock-small', messages: [{ role: 'user', content: 'capped [mock:tokens=2]' }], max_tokens: 1000, stream: true, stream_options: { include_usage: true } };
    clientBodies.set(input.requestId, client);

    await callUpstream(activityEnv(), input);

    const { stream: _s, stream_options: _o, max_tokens: _m, ...rest } = client;
    const expected = { ...rest, max_tokens: 7 };
    expect(mock.stats().lastRequest?.messagesSha256).toBe(sha256(JSON.stringify(expected.messages)));
    expect(mock.stats().lastRequest?.maxTokens).toBe(7);
  });

  it('a request body missing from the store: a non-retryable RequestBodyMissing, the upstream never called', async () => {
    const input = request('gone');
    clientBodies.delete(input.requestId);
    const before = mock.stats().requests;

    const failure = await callUpstream(activityEnv(), input).then(() => undefined, (err: unknown) => err);

    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect(failure).toMatchObject({ type: FailureType.requestBodyMissing, nonRetryable: true });
    expect(mock.stats().requests).toBe(before);
    expect(await relayed(input)).toEqual([]);
  });

  it('an input from before the body store (no bodyRef) fails the same clean way', async () => {
    const { bodyRef: _ref, ...legacy } = request('legacy');
    const failure = await callUpstream(activityEnv(), legacy as BilledRequestInput).then(() => undefined, (err: unknown) => err);
    expect(failure).toMatchObject({ type: FailureType.requestBodyMissing, nonRetryable: true });
  });

  it('a retried attempt finds the body again (it leaves the store only at settlement)', async () => {
    const input = request('twice [mock:tokens=2] [mock:fail=before]');
    await expect(callUpstream(activityEnv(1), input)).rejects.toBeInstanceOf(UpstreamHttpError);
    expect(await deps.bodies.get(input.requestId, 'request')).toBeDefined();
  });
});

describe('UpstreamCallStep: failures (no retry once output reached the client)', () => {
  it('an upstream 500 before any output throws a retryable error and relays nothing', async () => {
    const input = request('break [mock:fail=before]');
    const before = mock.stats().requests;

    const failure = await callUpstream(activityEnv(), input).then(
      () => undefined,
      (err: unknown) => err,
    );

    expect(failure).toBeInstanceOf(UpstreamHttpError);
    expect(failure).toMatchObject({ status: 500, retryable: true });
    expect(mock.stats().requests).toBe(before + 1);
    expect(await relayed(input)).toEqual([]);
  });

  it('an upstream that refuses the request (HTTP 400) ends with failed_before_output and an error entry, no retry', async () => {
    const input = request('refuse [mock:status=400]');

    const outcome = await callUpstream(activityEnv(), input);

    const error = { status: 502, message: 'upstream answered HTTP 400', type: 'upstream_error', code: 'upstream_error' };
    expect(outcome).toMatchObject({ status: 'failed_before_output', error });
    expect(await relayed(input)).toEqual([{ type: 'error', data: error }]);
  });

  it('a stream that dies after 3 chunks: failed_after_output, 3 chunks + an error entry, the 3 delivered tokens billed by tiktoken', async () => {
    const input = request('die soon [mock:fail=after:3][mock:tokens=10]');

    const outcome = await callUpstream(activityEnv(), input);

    expect(outcome).toEqual({ status: 'failed_after_output', promptTokens: ESTIMATED_PROMPT, completionTokens: 3, tokenSource: 'tiktoken', channel: 'default', error: INTERRUPTED });
    const entries = await relayed(input);
    expect(entries.map((e) => e.type)).toEqual(['chunk', 'chunk', 'chunk', 'error']);
    expect(cl100k.encode(chunkText(entries)).length).toBe(3);
    expect(entries[3]).toEqual({ type: 'error', data: INTERRUPTED });
  });
});

describe('UpstreamCallStep: cancellation', () => {
  it('a client cancel marker during a slow stream aborts the upstream request and bills what was delivered (client_cancelled)', async () => {
    const input = request('slow [mock:latency=50][mock:tokens=60]');
    const env = activityEnv();
    const heartbeats: unknown[] = [];
    env.on('heartbeat', (details: unknown) => heartbeats.push(details));
    const cancelledBefore = mock.stats().cancelled;

    const running = callUpstream(env, input);
    await waitFor(async () => (await relayed(input)).filter((e) => e.type === 'chunk').length >= 3);
    await deps.relay.requestCancel(input.tenantId, input.requestId);
    const outcome = await running;

    const entries = await relayed(input);
    const delivered = cl100k.encode(chunkText(entries)).length;
    expect(delivered).toBeGreaterThanOrEqual(3);
    expect(delivered).toBeLessThan(60);
    expect(outcome).toEqual({ status: 'client_cancelled', promptTokens: ESTIMATED_PROMPT, completionTokens: delivered, tokenSource: 'tiktoken', channel: 'default' });
    expect(entries.at(-1)).toEqual({ type: 'error', data: CLIENT_CLOSED });
    await waitFor(() => mock.stats().cancelled === cancelledBefore + 1);
    expect(heartbeats.length).toBeGreaterThan(0);
  });

  it('a cancel marker set before the call: the upstream is never called and the reservation is to be voided', async () => {
    const input = request('too late [mock:tokens=5]');
    await deps.relay.requestCancel(input.tenantId, input.requestId);
    const before = mock.stats().requests;

    const outcome = await callUpstream(activityEnv(), input);

    expect(outcome).toMatchObject({ status: 'failed_before_output', completionTokens: 0, error: CLIENT_CLOSED });
    expect(mock.stats().requests).toBe(before);
    expect(await relayed(input)).toEqual([{ type: 'error', data: CLIENT_CLOSED }]);
  });

  it('a Temporal cancellation aborts the upstream request too and still ends the client\'s stream', async () => {
    const input = request('cancel me [mock:latency=50][mock:tokens=60]');
    const env = activityEnv();
    const cancelledBefore = mock.stats().cancelled;

    const running = callUpstream(env, input);
    await waitFor(async () => (await relayed(input)).some((e) => e.type === 'chunk'));
    env.cancel();
    const outcome = await running;

    const entries = await relayed(input);
    const delivered = cl100k.encode(chunkText(entries)).length;
    expect(delivered).toBeLessThan(60);
    // Output had reached the client, so the delivered tokens are billed and the stream ends with an error.
    expect(outcome).toEqual({ status: 'failed_after_output', promptTokens: ESTIMATED_PROMPT, completionTokens: delivered, tokenSource: 'tiktoken', channel: 'default', error: INTERRUPTED });
    expect(entries.at(-1)).toEqual({ type: 'error', data: INTERRUPTED });
    await waitFor(() => mock.stats().cancelled === cancelledBefore + 1);
  });
});

describe('UpstreamCallStep: a retried attempt reads the relay first', () => {
  it('finds delivered output: does not call the upstream again, bills the delivered text and ends the stream', async () => {
    const input = request('retry [mock:tokens=5]');
    const writer = deps.relay.writer(input.tenantId, input.requestId);
    writer.push({ type: 'chunk', data: { choices: [{ index: 0, delta: { role: 'assistant', content: 'ledger' } }] } });
    writer.push({ type: 'chunk', data: { choices: [{ index: 0, delta: { content: ' quota' } }] } });
    await writer.flush();
    const before = mock.stats().requests;

    const outcome = await callUpstream(activityEnv(2), input);

    expect(mock.stats().requests).toBe(before);
    expect(outcome).toEqual({ status: 'failed_after_output', promptTokens: ESTIMATED_PROMPT, completionTokens: 2, tokenSource: 'tiktoken', channel: 'default', error: INTERRUPTED });
    expect((await relayed(input)).map((e) => e.type)).toEqual(['chunk', 'chunk', 'error']);
  });

  it('finds a finished relay: returns its usage as completed and appends nothing', async () => {
    const input = request('done before [mock:tokens=5]');
    const writer = deps.relay.writer(input.tenantId, input.requestId);
    writer.push({ type: 'chunk', data: { choices: [{ index: 0, delta: { content: 'ledger' } }] } });
    writer.push({ type: 'usage', data: { prompt_tokens: 12, completion_tokens: 1, total_tokens: 13 } });
    writer.push({ type: 'done' });
    await writer.flush();
    const before = mock.stats().requests;

    const outcome = await callUpstream(activityEnv(3), input);

    expect(mock.stats().requests).toBe(before);
    expect(outcome).toEqual({ status: 'completed', promptTokens: 12, completionTokens: 1, tokenSource: 'upstream', channel: 'default' });
    expect(await relayed(input)).toHaveLength(3);
  });

  it('finds only a terminal error with no output (client left before any byte): failed_before_output, so settlement voids', async () => {
    const input = request('gone [mock:tokens=5]');
    const writer = deps.relay.writer(input.tenantId, input.requestId);
    writer.push({ type: 'error', data: CLIENT_CLOSED });
    await writer.flush();
    const before = mock.stats().requests;

    const outcome = await callUpstream(activityEnv(2), input);

    expect(mock.stats().requests).toBe(before);
    expect(outcome).toMatchObject({ status: 'failed_before_output', completionTokens: 0, error: CLIENT_CLOSED });
    expect(await relayed(input)).toHaveLength(1);
  });
});

describe('UpstreamCallStep: embeddings and the Responses API (issue 11)', () => {
  /** A request of another operation, its client body stored as the API stores it. */
  function operationRequest(operation: 'embeddings' | 'responses', body: Record<string, unknown>, overrides: Partial<BilledRequestInput> = {}): BilledRequestInput {
    const input = billedInput(uniqueId('op-t'), uniqueId('op-k'), { operation, reservedMicros: 1_000, promptTokens: ESTIMATED_PROMPT, maxOutputTokens: operation === 'embeddings' ? 0 : 30, ...overrides });
    clientBodies.set(input.requestId, body);
    return input;
  }

  it('embeddings: relays the upstream answer unchanged as one response entry, billed by its prompt tokens', async () => {
    const input = operationRequest('embeddings', { model: 'text-embedding-3-small', input: [[1, 2, 3], [4]], encoding_format: 'float' });
    const outcome = await callUpstream(activityEnv(), input);
    expect(outcome).toEqual({ status: 'completed', promptTokens: 4, completionTokens: 0, tokenSource: 'upstream', channel: 'default' });
    const entries = await relayed(input);
    expect(entries.map((e) => e.type)).toEqual(['response', 'done']);
    expect(entries[0]!.type === 'response' && entries[0]!.data).toMatchObject({ object: 'list', usage: { prompt_tokens: 4, total_tokens: 4 } });
  });

  it('responses stream: relays every event as it came, bills response.completed, and sent our output cap upstream', async () => {
    const input = operationRequest('responses', { model: 'mock-small', input: 'stream [mock:tokens=6]', max_output_tokens: 999, stream: true }, { stream: true });
    const outcome = await callUpstream(activityEnv(), input);
    expect(mock.stats().lastRequest?.maxTokens).toBe(30);
    expect(outcome).toMatchObject({ status: 'completed', completionTokens: 6, tokenSource: 'upstream' });
    const entries = await relayed(input);
    expect(entries.at(-1)).toEqual({ type: 'done' });
    const events = entries.filter((e) => e.type === 'chunk').map((e) => e.data as { type: string; sequence_number: number });
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    expect(events.filter((e) => e.type === 'response.output_text.delta')).toHaveLength(6);
    expect(events.at(-1)?.type).toBe('response.completed');
  });

  it('responses stream that dies mid-way: failed_after_output, the delivered deltas billed by tiktoken; a retry bills the same from the relay', async () => {
    const input = operationRequest('responses', { model: 'mock-small', input: 'cut [mock:fail=after:7] [mock:tokens=10]' }, { stream: true });
    const outcome = await callUpstream(activityEnv(), input);
    expect(outcome).toEqual({ status: 'failed_after_output', promptTokens: ESTIMATED_PROMPT, completionTokens: 3, tokenSource: 'tiktoken', channel: 'default', error: INTERRUPTED });
    const before = mock.stats().requests;
    const retried = await callUpstream(activityEnv(2), input);
    expect(mock.stats().requests).toBe(before);
    expect(retried).toEqual(outcome);
    expect((await relayed(input)).filter((e) => e.type === 'error')).toHaveLength(1);
  });

  it('a channel whose provider has no such endpoint fails for good (non-retryable), relaying nothing', async () => {
    const input = operationRequest('embeddings', { model: 'text-embedding-3-small', input: 'x' });
    await deps.bodies.put({ requestId: input.requestId, tenantId: input.tenantId, kind: 'request', body: Buffer.from(JSON.stringify(clientBodies.get(input.requestId))) });
    const chatOnly = createOpenAICompatibleProvider({ baseUrl: mock.url });
    const step = createUpstreamCallStep({ providers: { default: { complete: chatOnly.complete, stream: chatOnly.stream } }, relay: deps.relay, bodies: deps.bodies, metrics: deps.metrics, log: deps.log, pollIntervalMs: 20 });
    const failure = await activityEnv().run<[BilledRequestInput, string], UpstreamOutcome, typeof step>(step, input, 'default').catch((err: unknown) => err);
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect(failure).toMatchObject({ type: FailureType.upstreamRejected, nonRetryable: true });
    expect(await relayed(input)).toEqual([]);
  });
});
