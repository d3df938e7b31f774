/**
 * Upstream channels (issue 10) on the real Redis and PostgreSQL with two real mock
 * upstreams over HTTP: the router's choice (model, enabled, weights, affinity first),
 * failover to the second channel when the first fails before its first byte, none once
 * output reached the client, the shared cool-down, and the affinity updated only after a
 * successful call (M8.3). Channels serve a model of this file only, so other test files
 * sharing the database never route to them.
 */
import type { Knex } from 'knex';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createUpstreamCallStep } from '../../src/activities/upstream-call-step';
import { createRoutingStep } from '../../src/activities/routing-step';
import { createChannelRepository } from '../../src/channels/channel-repository';
import { createChannelHealth } from '../../src/channels/channel-health';
import { createChannelRouter, DEFAULT_CHANNEL_ID, type ChannelRouter } from '../../src/channels/channel-router';
import { developmentKeyring } from '../../src/codec/keyring';
import { createAffinityStore } from '../../src/routing/affinity-store';
import { seededRandom } from '../../src/routing/weighted-choice';
import type { Redis } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';
import { startMockUpstream, type MockUpstream } from '../../src/upstream/mock/server';
import { createOpenAICompatibleProvider } from '../../src/upstream/openai-compatible';
import type { BilledRequestInput, RouteDecision, UpstreamOutcome } from '../../src/workflows/definitions';
import { testDb, testRedis, uniqueId } from '../helpers/services';
import { billedInput, metricValue, stepDeps, type StepDeps } from '../helpers/activity-deps';
import { Registry } from 'prom-client';
import { createBillingMetrics } from '../../src/metrics';
import { createRedis } from '../../src/redis/client';
import { freePort } from '../../src/embedded/child';

let redis: Redis;
let db: Knex;
let deps: StepDeps;
let mockA: MockUpstream;
let mockB: MockUpstream;
const repo = () => createChannelRepository(db, developmentKeyring());
const created: string[] = [];

beforeAll(async () => {
  redis = await testRedis();
  db = testDb();
  deps = stepDeps(redis, db);
  [mockA, mockB] = await Promise.all([startMockUpstream({ port: 0 }), startMockUpstream({ port: 0 })]);
});
afterEach(() => {
  mockA.setDefaults({ failBeforeFirstChunk: false, failAfterChunks: null, status: null, hang: false });
  mockB.setDefaults({ failBeforeFirstChunk: false, failAfterChunks: null, status: null });
});
afterAll(async () => {
  for (const id of created) await repo().remove(id);
  await Promise.all([mockA.close(), mockB.close()]);
  await deps.relay.close();
  await db.destroy();
  redis.disconnect();
});

/** Two channels of a fresh model: a on mock A, b on mock B. */
async function twoChannels(opts: { weightA?: number; weightB?: number } = {}): Promise<{ model: string; a: string; b: string }> {
  const model = uniqueId('chan-model');
  const a = uniqueId('ch-a');
  const b = uniqueId('ch-b');
  await repo().put({ id: a, baseUrl: mockA.url, apiKey: 'sk-channel-a-secret', models: [model], weight: opts.weightA ?? 1, enabled: true });
  await repo().put({ id: b, baseUrl: mockB.url, models: ['*-not-this', model], weight: opts.weightB ?? 1, enabled: true });
  created.push(a, b);
  return { model, a, b };
}

function router(opts: { random?: () => number; threshold?: number; registry?: Registry } = {}): ChannelRouter {
  return createChannelRouter({
    ...(opts.registry ? { metrics: createBillingMetrics(opts.registry) } : {}),
    channels: repo(),
    health: createChannelHealth(redis, { threshold: opts.threshold ?? 3, windowMs: 30_000, cooldownMs: 30_000 }),
    affinity: createAffinityStore(redis),
    defaultProvider: createOpenAICompatibleProvider({ baseUrl: 'http://127.0.0.1:1/v1' }),
    cacheMs: 0,
    ...(opts.random ? { random: opts.random } : {}),
  });
}

function activityEnv(attempt = 1): MockActivityEnvironment {
  return new MockActivityEnvironment({ attempt }, { logger: new DefaultLogger('ERROR') });
}

async function call(r: ChannelRouter, input: BilledRequestInput, route: RouteDecision): Promise<UpstreamOutcome> {
  await deps.bodies.put({ requestId: input.requestId, tenantId: input.tenantId, kind: 'request', body: Buffer.from(JSON.stringify({ model: input.model, messages: [{ role: 'user', content: 'hello channels' }], max_tokens: 100 })) });
  const step = createUpstreamCallStep({ providers: {}, router: r, relay: deps.relay, bodies: deps.bodies, metrics: deps.metrics, log: deps.log, pollIntervalMs: 20 });
  return activityEnv().run<[BilledRequestInput, RouteDecision], UpstreamOutcome, typeof step>(step, input, route);
}

function input(model: string, overrides: Partial<BilledRequestInput> = {}): BilledRequestInput {
  return billedInput(uniqueId('ch-t'), uniqueId('ch-k'), { reservedMicros: 10_000, model, ...overrides });
}

describe('ChannelRouter.route', () => {
  it('chooses among the enabled channels of the model by weight (seeded: 3:1 within 3 points over 4000 routes)', async () => {
    const { model, a, b } = await twoChannels({ weightA: 3, weightB: 1 });
    const r = router({ random: seededRandom(11) });
    let firstA = 0;
    for (let i = 0; i < 4000; i++) {
      const d = await r.route({ model });
      expect([d.channel, ...d.fallbacks].sort()).toEqual([a, b].sort());
      if (d.channel === a) firstA++;
    }
    expect(Math.abs(firstA / 4000 - 0.75)).toBeLessThan(0.03);
  });

  it('skips a disabled channel and one that does not serve the model; `*` serves any model', async () => {
    const { model, a, b } = await twoChannels();
    await repo().put({ id: a, baseUrl: mockA.url, models: [model], weight: 1, enabled: false });
    expect(await router().route({ model })).toEqual({ channel: b, fallbacks: [], affinity: false });
    const star = uniqueId('ch-star');
    created.push(star);
    const onlyStarModel = uniqueId('chan-model');
    // A disabled `*` channel changes nothing for other files' models.
    await repo().put({ id: star, baseUrl: mockA.url, models: ['*'], weight: 1, enabled: false });
    expect(await router().route({ model: onlyStarModel })).toEqual({ channel: DEFAULT_CHANNEL_ID, fallbacks: [], affinity: false });
  });

  it('a model no channel serves goes to the built-in default channel (the configured upstream)', async () => {
    const r = router();
    expect(await r.route({ model: uniqueId('unserved') })).toEqual({ channel: DEFAULT_CHANNEL_ID, fallbacks: [], affinity: false });
    expect(await r.providerFor(DEFAULT_CHANNEL_ID)).toBeDefined();
    expect(await r.providerFor(uniqueId('no-such-channel'))).toBeUndefined();
  });

  it('builds one provider per base URL and key, and a new one when the key changes', async () => {
    const { a } = await twoChannels();
    const built: string[] = [];
    const r = createChannelRouter({
      channels: repo(), health: createChannelHealth(redis), affinity: createAffinityStore(redis),
      defaultProvider: createOpenAICompatibleProvider({ baseUrl: 'http://127.0.0.1:1/v1' }), cacheMs: 0,
      providerOf: (c) => {
        built.push(c.apiKey ?? '');
        return createOpenAICompatibleProvider({ baseUrl: c.baseUrl, ...(c.apiKey ? { apiKey: c.apiKey } : {}) });
      },
    });
    const first = await r.providerFor(a);
    expect(await r.providerFor(a)).toBe(first);
    await repo().put({ id: a, baseUrl: mockA.url, apiKey: 'sk-rotated', models: ['x'], weight: 1, enabled: true });
    expect(await r.providerFor(a)).not.toBe(first);
    expect(built).toEqual(['sk-channel-a-secret', 'sk-rotated']);
  });

  it("routes a conversation to its affinity channel first, whatever the weights", async () => {
    const { model, a } = await twoChannels({ weightA: 1, weightB: 1000 });
    const conversationId = uniqueId('conv');
    await createAffinityStore(redis).apply(conversationId, [{ type: 'success', channel: a, at: Date.now() }]);
    const r = router({ random: seededRandom(5) });
    for (let i = 0; i < 20; i++) expect(await r.route({ model, conversationId })).toMatchObject({ channel: a, affinity: true });
  });

  it('Redis down: a route knows no cool-down and no affinity, goes on by weight, and says so in the log (issue 14)', async () => {
    const { model, a, b } = await twoChannels();
    const dead = createRedis(`redis://127.0.0.1:${await freePort()}`, { lazyConnect: true });
    dead.on('error', () => undefined);
    const warnings: string[] = [];
    try {
      const r = createChannelRouter({
        channels: repo(),
        health: createChannelHealth(dead),
        affinity: createAffinityStore(dead),
        defaultProvider: createOpenAICompatibleProvider({ baseUrl: 'http://127.0.0.1:1/v1' }),
        log: { warn: (_obj: unknown, msg?: string) => void warnings.push(msg ?? '') },
        cacheMs: 0,
      });
      const decision = await r.route({ model, conversationId: uniqueId('conv') });
      expect([decision.channel, ...decision.fallbacks].sort()).toEqual([a, b].sort());
      expect(decision.affinity).toBe(false);
      expect(warnings.sort()).toEqual(['routing without channel affinity: Redis unavailable', 'routing without channel cool-downs: Redis unavailable']);
    } finally {
      dead.disconnect();
    }
  });

  it('RoutingStep returns the router decision (recorded in history as the step result)', async () => {
    const { model, a, b } = await twoChannels();
    const step = createRoutingStep({ channels: {}, router: router() });
    const decision = await step(input(model)) as RouteDecision;
    expect([decision.channel, ...decision.fallbacks].sort()).toEqual([a, b].sort());
  });
});

describe('failover before the first byte, never after output', () => {
  it('a channel answering 500 before any output: the same call is served by the next channel', async () => {
    const { model, a, b } = await twoChannels();
    mockA.setDefaults({ failBeforeFirstChunk: true });
    const before = { a: mockA.stats().requests, b: mockB.stats().requests };
    const req = input(model);
    const outcome = await call(router(), req, { channel: a, fallbacks: [b], affinity: false });
    expect(outcome).toMatchObject({ status: 'completed', channel: b });
    expect(mockA.stats().requests - before.a).toBe(1);
    expect(mockB.stats().requests - before.b).toBe(1);
    const entries = await deps.relay.entries(req.tenantId, req.requestId);
    expect(entries.filter((e) => e.type === 'error')).toEqual([]);
    expect(entries.at(-1)).toEqual({ type: 'done' });
  });

  it('non-streamed too, and a connection refused counts as a failure before the first byte', async () => {
    const { model, b } = await twoChannels();
    const dead = uniqueId('ch-dead');
    created.push(dead);
    await repo().put({ id: dead, baseUrl: 'http://127.0.0.1:1/v1', models: [model], weight: 1, enabled: true });
    const outcome = await call(router(), input(model, { stream: false }), { channel: dead, fallbacks: [b], affinity: false });
    expect(outcome).toMatchObject({ status: 'completed', channel: b });
  });

  it('a channel that dies after output reached the relay is not failed over: billed as delivered, next channel never called', async () => {
    const { model, a, b } = await twoChannels();
    mockA.setDefaults({ failAfterChunks: 3 });
    const beforeB = mockB.stats().requests;
    const req = input(model);
    const outcome = await call(router(), req, { channel: a, fallbacks: [b], affinity: false });
    expect(outcome).toMatchObject({ status: 'failed_after_output', channel: a });
    expect(outcome.completionTokens).toBeGreaterThan(0);
    expect(mockB.stats().requests).toBe(beforeB);
  });

  it('a 4xx rejection (the request is at fault, not the channel) is not failed over', async () => {
    const { model, a, b } = await twoChannels();
    mockA.setDefaults({ status: 400 });
    const beforeB = mockB.stats().requests;
    const outcome = await call(router(), input(model), { channel: a, fallbacks: [b], affinity: false });
    expect(outcome).toMatchObject({ status: 'failed_before_output', channel: a });
    expect(mockB.stats().requests).toBe(beforeB);
  });

  it('every channel failing before output fails the attempt (Temporal retries it from the recorded first channel)', async () => {
    const { model, a, b } = await twoChannels();
    mockA.setDefaults({ failBeforeFirstChunk: true });
    mockB.setDefaults({ failBeforeFirstChunk: true });
    await expect(call(router(), input(model), { channel: a, fallbacks: [b], affinity: false })).rejects.toThrow(/HTTP 500/);
  });

  it('a Temporal cancellation before the first byte is no channel failure: no failover, no health count', async () => {
    const { model, a, b } = await twoChannels();
    mockA.setDefaults({ hang: true });
    const beforeB = mockB.stats().requests;
    const req = input(model);
    await deps.bodies.put({ requestId: req.requestId, tenantId: req.tenantId, kind: 'request', body: Buffer.from(JSON.stringify({ model, messages: [{ role: 'user', content: 'hang' }] })) });
    const step = createUpstreamCallStep({ providers: {}, router: router(), relay: deps.relay, bodies: deps.bodies, metrics: deps.metrics, log: deps.log, pollIntervalMs: 20 });
    const env = activityEnv();
    const inFlight = mockA.stats().inFlight;
    const running = env.run<[BilledRequestInput, RouteDecision], UpstreamOutcome, typeof step>(step, req, { channel: a, fallbacks: [b], affinity: false }).catch((err: unknown) => err);
    const deadline = Date.now() + 5_000;
    while (mockA.stats().inFlight === inFlight && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    env.cancel();
    await running;
    mockA.setDefaults({ hang: false });
    expect(mockB.stats().requests).toBe(beforeB);
    expect(await redis.get(CacheKeys.channelFailures(a))).toBeNull();
  });

  it('a retry with the recorded decision starts on the same channel', async () => {
    const { model, a, b } = await twoChannels();
    const route = { channel: a, fallbacks: [b], affinity: false };
    const before = mockA.stats().requests;
    const r = router();
    const req = input(model, { relayMode: 'result' });
    expect(await call(r, req, route)).toMatchObject({ channel: a });
    expect(await call(r, { ...req, requestId: uniqueId('retry') , bodyRef: { requestId: req.requestId } }, route)).toMatchObject({ channel: a });
    expect(mockA.stats().requests - before).toBe(2);
  });
});

describe('cool-down (shared in Redis)', () => {
  it('3 failures before the first byte cool a channel down: routes skip it while a healthy channel serves', async () => {
    const { model, a, b } = await twoChannels({ weightA: 1000, weightB: 1 });
    const registry = new Registry();
    const r = router({ threshold: 3, registry });
    mockA.setDefaults({ failBeforeFirstChunk: true });
    for (let i = 0; i < 3; i++) {
      expect(await call(r, input(model), { channel: a, fallbacks: [b], affinity: false })).toMatchObject({ channel: b });
    }
    expect(await redis.exists(CacheKeys.channelCooldown(a))).toBe(1);
    expect(await metricValue(registry, 'billing_channel_failures_total', { channel: a })).toBe(3);
    expect(await metricValue(registry, 'billing_channel_cooldowns_total', { channel: a })).toBe(1);
    for (let i = 0; i < 20; i++) expect(await r.route({ model })).toEqual({ channel: b, fallbacks: [], affinity: false });
    // Another worker's router sees the same cool-down.
    expect(await router().route({ model })).toEqual({ channel: b, fallbacks: [], affinity: false });
    await createChannelHealth(redis).reset(a);
    expect([(await r.route({ model })).channel, ...(await r.route({ model })).fallbacks]).toContain(a);
  });

  it('two failures stay below the threshold; when every channel is cooling a route still names one', async () => {
    const { model, a, b } = await twoChannels();
    const health = createChannelHealth(redis, { threshold: 3, windowMs: 30_000, cooldownMs: 30_000 });
    expect(await health.recordFailure(a)).toBe(false);
    expect(await health.recordFailure(a)).toBe(false);
    expect([...(await health.cooling([a, b]))]).toEqual([]);
    expect(await health.recordFailure(a)).toBe(true);
    for (let i = 0; i < 3; i++) await health.recordFailure(b);
    expect([...(await health.cooling([a, b]))].sort()).toEqual([a, b].sort());
    const d = await router().route({ model });
    expect([d.channel, ...d.fallbacks].sort()).toEqual([a, b].sort());
  });
});

describe('RoutingAffinity through the steps (M8.3: updated only after a successful call)', () => {
  it('binds after two successes; a failing bound channel fails over and keeps its binding (cooling), routes avoid it meanwhile', async () => {
    const { model, a, b } = await twoChannels();
    const conversationId = uniqueId('conv');
    const store = createAffinityStore(redis);
    const r = router();
    const route = { channel: a, fallbacks: [b], affinity: false };

    // A call that fails on every channel changes nothing.
    mockA.setDefaults({ failBeforeFirstChunk: true });
    mockB.setDefaults({ failBeforeFirstChunk: true });
    await expect(call(r, input(model, { conversationId }), route)).rejects.toThrow();
    expect(await store.get(conversationId)).toEqual({ kind: 'unbound' });
    expect(await redis.exists(CacheKeys.conversationAffinity(conversationId))).toBe(0);

    mockA.setDefaults({ failBeforeFirstChunk: false });
    mockB.setDefaults({ failBeforeFirstChunk: false });
    await call(r, input(model, { conversationId }), route);
    expect(await store.get(conversationId)).toEqual({ kind: 'probing', channel: a, successes: 1 });
    await call(r, input(model, { conversationId }), route);
    expect(await store.get(conversationId)).toEqual({ kind: 'bound', channel: a, successes: 2 });
    expect(await r.route({ model, conversationId })).toMatchObject({ channel: a, affinity: true });

    // The bound channel fails before its first byte: b serves, the binding stays a (cooling), routes avoid a meanwhile.
    mockA.setDefaults({ failBeforeFirstChunk: true });
    expect(await call(r, input(model, { conversationId }), { channel: a, fallbacks: [b], affinity: true })).toMatchObject({ channel: b });
    const cooling = await store.get(conversationId);
    expect(cooling).toMatchObject({ kind: 'cooling', channel: a, successes: 2 });
    expect(await r.route({ model, conversationId })).toMatchObject({ affinity: false });
  });
});

describe('channel keys at rest', () => {
  it('the api key is stored encrypted, read back only by listRoutable, never in a view', async () => {
    const { a } = await twoChannels();
    const row = await db('upstream_channel').where({ channel_id: a }).first();
    expect(Buffer.from(row.api_key_ciphertext).toString('utf8')).not.toContain('sk-channel-a-secret');
    expect(JSON.stringify(await repo().get(a))).not.toContain('sk-channel-a-secret');
    expect((await repo().get(a))?.hasApiKey).toBe(true);
    expect((await repo().listRoutable()).find((c) => c.id === a)?.apiKey).toBe('sk-channel-a-secret');
    // Omitting the key keeps it; null removes it.
    await repo().put({ id: a, baseUrl: mockA.url, models: ['x'], weight: 2, enabled: true });
    expect((await repo().listRoutable()).find((c) => c.id === a)?.apiKey).toBe('sk-channel-a-secret');
    await repo().put({ id: a, baseUrl: mockA.url, apiKey: null, models: ['x'], weight: 2, enabled: true });
    expect((await repo().get(a))?.hasApiKey).toBe(false);
  });
});
