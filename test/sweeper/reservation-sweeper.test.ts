/**
 * The reservation sweeper (issue 9 items 4 and 7; M3.4 every reservation ends committed
 * or voided, M12 nothing lost) on the real stack: the API and worker of startTestApp on
 * the dev server, Redis and PostgreSQL of the global setup, the mock upstream over HTTP.
 * Billed-request workflows are terminated by hand mid-stream, before any output, or while
 * their settlement cannot run; a reservation is written without any workflow; a running
 * workflow is swept past. Each swept reservation is settled exactly once (a second run
 * does not see it and changes nothing), for what its relay or its history shows was
 * delivered, and the Redis counters equal the ledger afterwards.
 *
 * The sweeper examines only rows older than AGE_SECONDS; a test makes its own rows that
 * old by moving their created_at back, so the rows of other test files are never swept
 * here. The database is shared, so a run's summary counts other rows too: each test
 * checks its own rows through the per-row outcomes (onRow) and the ledger.
 */
import type { Knex } from 'knex';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { MockActivityEnvironment } from '@temporalio/testing';
import { get_encoding } from 'tiktoken';
import { createActivities } from '../../src/activities';
import { createBillingStep } from '../../src/activities/billing-step';
import { createQuotaCheckStep } from '../../src/activities/quota-check-step';
import { loadConfig } from '../../src/config';
import { createModelPriceRepository } from '../../src/db/model-price-repository';
import { createMaintenanceMetrics } from '../../src/metrics';
import { consistencySettings, createConsistencyCheck } from '../../src/consistency/consistency-check';
import { createCounterSync } from '../../src/sync/counter-sync';
import { createRepositories } from '../../src/db/repositories';
import type { Redis } from '../../src/redis/client';
import { buildActivities } from '../../src/roles/worker';
import { createConversationRepository } from '../../src/db/conversation-repository';
import { keyringOf } from '../../src/codec/keyring';
import { createReservationSweeper, SweepOutcome, type SweepSummary, type SweptRow } from '../../src/sweeper';
import { createOpenAICompatibleProvider } from '../../src/upstream/openai-compatible';
import { billedRequest } from '../../src/workflows/billed-request';
import { billedRequestStartOptions } from '../../src/workflows/client';
import { billedRequestWorkflowId, type BilledRequestInput, type UpstreamOutcome } from '../../src/workflows/definitions';
import { billedInput, cachedCounters, closeTenant, metricValue, seedTenant, stepDeps, type StepDeps, type TenantSeed } from '../helpers/activity-deps';
import { startTestApp, TEST_MODEL, TEST_PRICE, type TestApp } from '../helpers/app';
import { ledgerUsage, settled } from '../helpers/ledger';
import { testDb, testRedis, uniqueId } from '../helpers/services';
import { devServerEnv, withWorker } from '../helpers/temporal';

/** The sweeper's threshold here; rows under test are moved to twice as old. */
const AGE_SECONDS = 3600;
const workflowsPath = require.resolve('../../src/workflows');
/** The app's test model: 1 micro per prompt token, 2 per completion token (TEST_PRICE of helpers/app). */
const APP_PRICE = { model: TEST_MODEL, inputPriceMicrosPerMtok: TEST_PRICE.input_price_micros_per_mtok, outputPriceMicrosPerMtok: TEST_PRICE.output_price_micros_per_mtok, maxOutputTokens: TEST_PRICE.max_output_tokens };

let app: TestApp;
let env: TestWorkflowEnvironment;
let db: Knex;
let redis: Redis;
let deps: StepDeps;
const seeds: TenantSeed[] = [];
const cl100k = get_encoding('cl100k_base');

beforeAll(async () => {
  app = await startTestApp();
  env = await devServerEnv();
  db = testDb();
  redis = await testRedis();
  deps = stepDeps(redis, db);
}, 60_000);
afterAll(async () => {
  for (const seed of seeds) await closeTenant(redis, deps.ledger, seed);
  await app?.stop();
  await env?.teardown();
  await db?.destroy();
  redis?.disconnect();
  cl100k.free();
});

function sweeper() {
  return createReservationSweeper({
    ledger: deps.ledger, client: env.client, billingStep: createBillingStep(deps), prices: createModelPriceRepository(db),
    relay: deps.relay, bodies: deps.bodies, metrics: deps.metrics, log: deps.log,
    settings: { pendingAfterSeconds: AGE_SECONDS, maxPerRun: 1000 },
  });
}

/** One run, with what it did to each row. */
async function sweep(): Promise<{ summary: SweepSummary; outcomes: Map<string, SweepOutcome>; rows: Map<string, SweptRow> }> {
  const rows = new Map<string, SweptRow>();
  const summary = await sweeper().sweep({ onRow: (r) => rows.set(r.requestId, r) });
  const outcomes = new Map([...rows].map(([id, r]) => [id, r.outcome]));
  expect(summary.stillRunning + summary.committed + summary.voided + summary.errors).toBe(summary.examined);
  return { summary, outcomes, rows };
}

/** Makes a reservation look twice as old as the sweeper's threshold. */
async function age(requestId: string): Promise<void> {
  const updated = await db('billing_transaction').where({ request_id: requestId }).update({ created_at: db.raw(`now() - make_interval(secs => ?)`, [2 * AGE_SECONDS]) });
  expect(updated).toBe(1);
}

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

interface Row { status: string; reserved_micros: string; amount_micros: string | null; prompt_tokens: number | null; completion_tokens: number | null; token_source: string | null }

/** A request's ledger row, and its tenant's and key's counters in Redis and in the ledger. */
async function state(tenantId: string, apiKeyId: string, requestId: string) {
  const row = await db('billing_transaction').where({ request_id: requestId }).first<Row>();
  const counters = await cachedCounters(redis, tenantId, apiKeyId);
  return { row, used: counters.used, spent: counters.spent, ledgerUsed: await ledgerUsage(db, tenantId), ledgerSpent: await deps.ledger.apiKeyLedgerSpend(apiKeyId) };
}

/**
 * Sweeps twice: the first run settles `requestId` with `outcome`, the second does not even
 * see it, and nothing of the request changes in between (exactly once). Returns the state after.
 */
async function sweptOnce(requestId: string, outcome: 'committed' | 'voided', settledFrom: 'history' | 'ledger', tenantId: string, apiKeyId: string) {
  const first = await sweep();
  expect(first.rows.get(requestId)).toEqual({ requestId, outcome, settledFrom });
  const after = await state(tenantId, apiKeyId, requestId);
  expect(after.row.status).toBe(outcome);
  // Redis and the ledger agree afterwards, for the tenant and for the key.
  expect({ used: after.used, spent: after.spent }).toEqual({ used: after.ledgerUsed, spent: after.ledgerSpent });
  const second = await sweep();
  expect(second.outcomes.has(requestId)).toBe(false);
  expect(await state(tenantId, apiKeyId, requestId)).toEqual(after);
  return after;
}

/** The relay's chunks and its terminal entry, if any. */
async function relayed(tenantId: string, requestId: string): Promise<{ chunks: number; terminal?: string }> {
  const entries = await deps.relay.entries(tenantId, requestId);
  return { chunks: entries.filter((e) => e.type === 'chunk').length, terminal: entries.find((e) => e.type === 'done' || e.type === 'error')?.type };
}

/** SSE data events of a streaming response, to its end. */
async function readEvents(res: Response): Promise<string[]> {
  const text = await res.text();
  return text.split('\n\n').filter((e) => e.startsWith('data: '));
}

function chat(key: string, content: string, stream: boolean): Promise<Response> {
  return fetch(`${app.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: TEST_MODEL, stream, messages: [{ role: 'user', content }] }),
  });
}

const terminate = (requestId: string, reason: string): Promise<unknown> => env.client.workflow.getHandle(billedRequestWorkflowId(requestId)).terminate(reason);

async function onlyRequestId(tenantId: string): Promise<string> {
  const rows = await db('billing_transaction').where({ tenant_id: tenantId, kind: 'usage' }).select<Array<{ request_id: string }>>('request_id');
  expect(rows).toHaveLength(1);
  return rows[0]!.request_id;
}

/** A reservation as QuotaCheckStep writes it (Redis reserved, ledger pending), with no workflow behind it. */
async function reservedWithoutWorkflow(tenantId: string, apiKeyId: string, overrides: Partial<BilledRequestInput> & Pick<BilledRequestInput, 'reservedMicros'>): Promise<BilledRequestInput> {
  const input = billedInput(tenantId, apiKeyId, overrides);
  const decision = await createQuotaCheckStep(deps)(input);
  expect(decision).toMatchObject({ admitted: true, path: 'redis' });
  return input;
}

describe('the reservation sweeper (issue 9 item 4)', () => {
  it('settles a workflow terminated by hand mid-stream: committed for exactly what the relay shows was delivered', async () => {
    const t = await app.tenant();
    // The app's output cap is 64 tokens; at 200 ms each the stream would take 12.8 s, far longer than the
    // few seconds the orphaned activity needs to learn (heartbeats are throttled) that its workflow is gone.
    const res = await chat(t.key, 'a long story [mock:tokens=64] [mock:latency=200]', true);
    expect(res.status).toBe(200);
    const requestId = res.headers.get('x-request-id')!;
    const reading = readEvents(res);
    await until('5 chunks relayed', async () => (await relayed(t.tenantId, requestId)).chunks >= 5);
    await terminate(requestId, 'test: terminated by hand mid-stream');

    // The orphaned UpstreamCallStep learns at its next heartbeat that its workflow is gone: it stops and ends the relay.
    await until('the relay ends', async () => (await relayed(t.tenantId, requestId)).terminal !== undefined);
    const events = await reading;
    const delivered = (await relayed(t.tenantId, requestId)).chunks;
    expect(events.filter((e) => e.includes('"delta"'))).toHaveLength(delivered);
    expect(delivered).toBeGreaterThanOrEqual(5);
    expect(delivered).toBeLessThan(64);
    // Nobody settles it: still pending, the whole reservation still counted in Redis.
    const before = await state(t.tenantId, t.apiKeyId, requestId);
    expect(before.row.status).toBe('pending');
    expect(before.used).toBe(Number(before.row.reserved_micros));

    await age(requestId);
    const after = await sweptOnce(requestId, 'committed', 'history', t.tenantId, t.apiKeyId);
    // No usage reached the relay: tiktoken counts the delivered text (one token per mock word) plus the admission's prompt
    // estimate; 1 micro per prompt token + 2 per completion token.
    const promptTokens = before.row.prompt_tokens!;
    const cost = promptTokens + 2 * delivered;
    expect(after.row).toMatchObject({ status: 'committed', prompt_tokens: promptTokens, completion_tokens: delivered, token_source: 'tiktoken', amount_micros: String(cost) });
    expect({ used: after.used, spent: after.spent }).toEqual({ used: cost, spent: cost });
    expect(await db('request_body').where({ request_id: requestId })).toEqual([]);
  }, 90_000);

  it('voids a workflow terminated before any output: a full refund, the Redis counters back to zero, the client gets 502', async () => {
    const t = await app.tenant();
    const cancelledBefore = app.mock.stats().cancelled;
    const response = chat(t.key, 'slow to start [mock:ttfb=30000]', false);
    await until('the reservation', async () => (await db('billing_transaction').where({ tenant_id: t.tenantId })).length === 1);
    const requestId = await onlyRequestId(t.tenantId);
    await until('the upstream call', () => app.mock.stats().inFlight > 0);
    await terminate(requestId, 'test: terminated before any output');
    // The orphaned upstream call is aborted at its next heartbeat; nothing was relayed.
    await until('the upstream call cancelled', () => app.mock.stats().cancelled === cancelledBefore + 1);
    expect(await relayed(t.tenantId, requestId)).toEqual({ chunks: 0 });
    const before = await state(t.tenantId, t.apiKeyId, requestId);
    expect(before.row.status).toBe('pending');
    expect(before.used).toBe(Number(before.row.reserved_micros));
    expect(before.used).toBeGreaterThan(0);

    await age(requestId);
    const after = await sweptOnce(requestId, 'voided', 'history', t.tenantId, t.apiKeyId);
    expect(after.row).toMatchObject({ status: 'voided', amount_micros: '0' });
    expect({ used: after.used, spent: after.spent }).toEqual({ used: 0, spent: 0 });
    // The sweep ended the relay, so the API, still waiting on it, answers at once.
    const res = await response;
    expect(res.status).toBe(502);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('upstream_error');
  }, 90_000);

  it('leaves a running workflow alone, however old its reservation; the workflow then settles it itself', async () => {
    const t = await app.tenant();
    const res = await chat(t.key, 'keep going [mock:tokens=30] [mock:latency=100]', true);
    expect(res.status).toBe(200);
    const requestId = res.headers.get('x-request-id')!;
    const reading = readEvents(res);
    await until('a chunk relayed', async () => (await relayed(t.tenantId, requestId)).chunks >= 1);
    await age(requestId);
    const before = await state(t.tenantId, t.apiKeyId, requestId);

    const run = await sweep();
    expect(run.outcomes.get(requestId)).toBe(SweepOutcome.stillRunning);
    expect(await state(t.tenantId, t.apiKeyId, requestId)).toEqual(before);
    expect(before.row.status).toBe('pending');

    await reading;
    await settled(db, t.tenantId);
    const after = await state(t.tenantId, t.apiKeyId, requestId);
    // Settled once, by its workflow, on the upstream's usage: all 30 tokens.
    expect(after.row).toMatchObject({ status: 'committed', completion_tokens: 30, token_source: 'upstream' });
    expect(after.used).toBe(Number(after.row.amount_micros));
    expect((await sweep()).outcomes.has(requestId)).toBe(false);
  }, 90_000);

  it('voids a reservation whose workflow never started, from the ledger row alone', async () => {
    const t = await app.tenant();
    const input = await reservedWithoutWorkflow(t.tenantId, t.apiKeyId, { model: TEST_MODEL, price: APP_PRICE, promptTokens: 12, maxOutputTokens: 64, reservedMicros: 140 });
    await expect(env.client.workflow.getHandle(billedRequestWorkflowId(input.requestId)).describe()).rejects.toThrow(/not found/i);
    expect(await cachedCounters(redis, t.tenantId, t.apiKeyId)).toMatchObject({ used: 140, spent: 140 });

    await age(input.requestId);
    const after = await sweptOnce(input.requestId, 'voided', 'ledger', t.tenantId, t.apiKeyId);
    expect(after.row).toMatchObject({ status: 'voided', amount_micros: '0' });
    expect({ used: after.used, spent: after.spent }).toEqual({ used: 0, spent: 0 });
  }, 60_000);

  it('bills the output a relay shows for a reservation without history, at the current price list', async () => {
    const seed = await seedTenant(db, 10_000_000, [{ budgetMicros: 1_000_000 }]);
    seeds.push(seed);
    const key = seed.apiKeyIds[0]!;
    const prices = createModelPriceRepository(db);
    const model = uniqueId('sweep-model');
    await prices.upsert({ model, inputPriceMicrosPerMtok: 1_000_000, outputPriceMicrosPerMtok: 2_000_000, maxOutputTokens: 100 });
    const input = await reservedWithoutWorkflow(seed.tenantId, key, {
      model, price: { model, inputPriceMicrosPerMtok: 1_000_000, outputPriceMicrosPerMtok: 2_000_000, maxOutputTokens: 100 }, promptTokens: 7, maxOutputTokens: 100, reservedMicros: 207,
    });
    // The price changes after admission; four chunks reached the client, and then the history was lost.
    await prices.upsert({ model, inputPriceMicrosPerMtok: 2_500_000, outputPriceMicrosPerMtok: 5_500_000, maxOutputTokens: 100 });
    const writer = deps.relay.writer(seed.tenantId, input.requestId);
    const words = [' hello', ' hello', ' hello', ' hello'];
    for (const content of words) writer.push({ type: 'chunk', data: { id: 'c', object: 'chat.completion.chunk', created: 1, model, choices: [{ index: 0, delta: { content }, finish_reason: null }] } });
    await writer.flush();
    expect(cl100k.encode(words.join('')).length).toBe(4);

    await age(input.requestId);
    const after = await sweptOnce(input.requestId, 'committed', 'ledger', seed.tenantId, key);
    // 7 x 2.5 + 4 x 5.5 = 39.5 -> 40 micros at today's price (15 at the admission's).
    expect(after.row).toMatchObject({ status: 'committed', prompt_tokens: 7, completion_tokens: 4, token_source: 'tiktoken', amount_micros: '40' });
    expect({ used: after.used, spent: after.spent }).toEqual({ used: 40, spent: 40 });
    // The client's stream, left open, was ended with an error.
    expect((await relayed(seed.tenantId, input.requestId)).terminal).toBe('error');
  }, 60_000);

  it('bills from history what a completed UpstreamCallStep reported when the workflow was terminated with its settlement stuck (relay mode result)', async () => {
    const seed = await seedTenant(db, 10_000_000);
    seeds.push(seed);
    const key = seed.apiKeyIds[0]!;
    // TEST_PRICE of activity-deps: 2.5 micros per prompt token, 10 per completion token.
    const input = billedInput(seed.tenantId, key, { relayMode: 'result', stream: false, includeUsage: false, promptTokens: 21, reservedMicros: 10_053 });
    await deps.bodies.put({ requestId: input.requestId, tenantId: seed.tenantId, kind: 'request', body: Buffer.from(JSON.stringify({ model: 'mock-small', messages: [{ role: 'user', content: 'hi [mock:tokens=16]' }] })) });
    const real = createActivities({ ...deps, channels: { '*': 'default' }, providers: { default: createOpenAICompatibleProvider({ baseUrl: app.mock.url }) }, pollIntervalMs: 100 });
    const stuckSettlement = jest.fn((_input: BilledRequestInput, _upstream: UpstreamOutcome | null) => Promise.reject(new Error('settlement unavailable (test)')));
    await withWorker(env, { workflowsPath, activities: { ...real, billingStep: stuckSettlement } }, async (taskQueue) => {
      const handle = await env.client.workflow.start(billedRequest, { ...billedRequestStartOptions(input, taskQueue), args: [input] });
      await until('settlement attempts', () => stuckSettlement.mock.calls.length >= 2);
      await handle.terminate('test: settlement stuck');
    });
    const reported = stuckSettlement.mock.calls[0]![1]!;
    expect(reported).toMatchObject({ status: 'completed', completionTokens: 16, tokenSource: 'upstream' });
    // Relay mode result: no relay. Without the history's outcome this would be voided.
    expect(await relayed(seed.tenantId, input.requestId)).toEqual({ chunks: 0 });

    await age(input.requestId);
    const after = await sweptOnce(input.requestId, 'committed', 'history', seed.tenantId, key);
    const cost = Math.ceil((reported.promptTokens * 2_500_000 + 16 * 10_000_000) / 1_000_000);
    expect(after.row).toMatchObject({ status: 'committed', prompt_tokens: reported.promptTokens, completion_tokens: 16, token_source: 'upstream', amount_micros: String(cost) });
    expect(after.used).toBe(cost);
  }, 90_000);

  it('refuses a history that belongs to another request: counted as an error, the reservation stays pending and counted', async () => {
    const seed = await seedTenant(db, 10_000_000);
    seeds.push(seed);
    const key = seed.apiKeyIds[0]!;
    // A closed workflow of another request (fake steps: it completes at once).
    const other = billedInput('tenant-elsewhere', 'key-elsewhere', { reservedMicros: 100 });
    const fakes = {
      quotaCheckStep: () => Promise.resolve({ admitted: true, reservedMicros: 100, path: 'redis', duplicate: false }),
      routingStep: () => Promise.resolve('default'),
      upstreamCallStep: () => Promise.resolve({ status: 'completed', promptTokens: 1, completionTokens: 1, tokenSource: 'upstream', channel: 'default' }),
      billingStep: () => Promise.resolve({ status: 'committed', costMicros: 3, deltaMicros: -97 }),
    };
    await withWorker(env, { workflowsPath, activities: fakes }, async (taskQueue) => {
      await env.client.workflow.execute(billedRequest, { ...billedRequestStartOptions(other, taskQueue), args: [other] });
    });
    const input = await reservedWithoutWorkflow(seed.tenantId, key, { reservedMicros: 10_053, promptTokens: 21 });
    await db('billing_transaction').where({ request_id: input.requestId }).update({ workflow_id: billedRequestWorkflowId(other.requestId) });
    await age(input.requestId);
    const errorsBefore = (await metricValue(deps.registry, 'billing_swept_reservations_total', { outcome: 'error' })) ?? 0;

    const run = await sweep();
    expect(run.outcomes.get(input.requestId)).toBe(SweepOutcome.error);
    expect(await metricValue(deps.registry, 'billing_swept_reservations_total', { outcome: 'error' })).toBeGreaterThanOrEqual(errorsBefore + 1);
    const after = await state(seed.tenantId, key, input.requestId);
    expect(after.row.status).toBe('pending');
    expect(after.used).toBe(10_053);
    // Still examined (and refused) on the next run: nothing is settled on a wrong history.
    expect((await sweep()).outcomes.get(input.requestId)).toBe(SweepOutcome.error);
  }, 90_000);

  it('deletes expired bodies in the same run and keeps live ones', async () => {
    const expired = uniqueId('body-expired');
    const live = uniqueId('body-live');
    for (const requestId of [expired, live]) await deps.bodies.put({ requestId, tenantId: 'sweeper-test', kind: 'request', body: Buffer.from('{}') });
    await db('request_body').where({ request_id: expired }).update({ expires_at: db.raw(`now() - interval '1 second'`) });

    const run = await sweep();
    expect(run.summary.expiredBodiesDeleted).toBeGreaterThanOrEqual(1);
    expect(await db('request_body').whereIn('request_id', [expired, live]).pluck('request_id')).toEqual([live]);
    await deps.bodies.delete(live, 'request');
  });

  it('deletes conversation messages past CONVERSATION_RETENTION_DAYS in the same run and keeps newer ones', async () => {
    const conversations = createConversationRepository(db, keyringOf({ a: Buffer.alloc(32, 0x55).toString('base64') }, 'a'));
    const tenantId = uniqueId('tenant-retention');
    await db('tenant_quota').insert({ tenant_id: tenantId, name: tenantId, quota_limit_micros: 1 });
    const conversationId = uniqueId('conv');
    const messages = [{ role: 'user' as const, content: 'q' }, { role: 'assistant' as const, content: 'a' }];
    await conversations.append({ conversationId, tenantId, requestId: uniqueId('old'), fence: 1, messages });
    await db('conversation_message').where({ conversation_id: conversationId }).update({ created_at: db.raw(`now() - interval '8 days'`) });
    await conversations.append({ conversationId, tenantId, requestId: uniqueId('new'), fence: 2, messages });

    const summary = await createReservationSweeper({
      ledger: deps.ledger, client: env.client, billingStep: createBillingStep(deps), prices: createModelPriceRepository(db),
      relay: deps.relay, bodies: deps.bodies, conversations, metrics: deps.metrics, log: deps.log,
      settings: { pendingAfterSeconds: AGE_SECONDS, maxPerRun: 1000, conversationRetentionDays: 7 },
    }).sweep();
    expect(summary.expiredMessagesDeleted).toBeGreaterThanOrEqual(2);
    expect((await conversations.messages(conversationId, tenantId)).map((m) => m.seq)).toEqual([2, 3]);
  });
});

describe("the worker's sweep activity (src/roles/worker.ts buildActivities)", () => {
  it('sweeps with the worker’s settings, heartbeating its progress after each row', async () => {
    const t = await app.tenant();
    const input = await reservedWithoutWorkflow(t.tenantId, t.apiKeyId, { model: TEST_MODEL, price: APP_PRICE, promptTokens: 12, maxOutputTokens: 64, reservedMicros: 140 });
    await age(input.requestId);
    const config = loadConfig({ ...process.env, SWEEP_PENDING_AFTER_SECONDS: String(AGE_SECONDS), RELAY_TTL_SECONDS: String(4 * AGE_SECONDS), LOG_LEVEL: 'silent' });
    const repositories = createRepositories(db, { bodyKeys: config.payloadCodecKeys });
    const activities = buildActivities({
      config, db, redis, repositories, scripts: deps.scripts, warmup: deps.warmup,
      relay: deps.relay, metrics: deps.metrics, log: deps.log, upstreamBaseUrl: app.mock.url, client: env.client,
      maintenanceMetrics: createMaintenanceMetrics(deps.registry), counterSync: createCounterSync(db, redis),
      consistencyCheck: createConsistencyCheck({
        ledger: repositories.consistencyLedger, reports: repositories.consistencyReports, redis, scripts: deps.scripts, metrics: deps.metrics, log: deps.log,
        settings: consistencySettings(config),
      }),
    });
    const activityEnv = new MockActivityEnvironment();
    const beats: SweepSummary[] = [];
    activityEnv.on('heartbeat', (details: SweepSummary) => beats.push(details));

    const summary: SweepSummary = await activityEnv.run(() => activities.sweepPendingReservations());
    expect(summary.voided).toBeGreaterThanOrEqual(1);
    expect(beats).toHaveLength(summary.examined);
    expect(beats.at(-1)).toMatchObject({ examined: summary.examined, voided: summary.voided, committed: summary.committed, errors: summary.errors });
    expect(await state(t.tenantId, t.apiKeyId, input.requestId)).toMatchObject({ row: { status: 'voided' }, used: 0, spent: 0 });
  }, 60_000);
});
