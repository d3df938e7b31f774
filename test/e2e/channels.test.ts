/**
 * Upstream channels through the real lifecycle (issue 10): the admin endpoints
 * (validation in the OpenAI error shape, the key never returned or logged) and billed
 * requests on two channels backed by two real mock upstreams, one of them failing:
 * failover before the first byte (JSON and SSE), the cool-down, none after output, exact
 * billing, and a conversation bound to the channel that served it (M8). Every channel
 * here serves a model of this file only, so concurrent test files never route to them.
 */
import { CacheKeys } from '../../src/redis/cache-keys';
import { createChannelRepository } from '../../src/channels/channel-repository';
import { developmentKeyring } from '../../src/codec/keyring';
import type { Redis } from '../../src/redis/client';
import { startMockUpstream, type MockUpstream } from '../../src/upstream/mock/server';
import { chat, startTestApp, TEST_PRICE, type TestApp } from '../helpers/app';
import { testDb, testRedis, uniqueId } from '../helpers/services';

const SECRET = 'sk-upstream-very-secret-0123456789';

describe('upstream channels (issue 10)', () => {
  let app: TestApp;
  let failing: MockUpstream;
  let healthy: MockUpstream;
  let redis: Redis;
  const logLines: string[] = [];
  const db = testDb();
  const created: string[] = [];

  beforeAll(async () => {
    [failing, healthy] = await Promise.all([startMockUpstream({ port: 0 }), startMockUpstream({ port: 0 })]);
    failing.setDefaults({ failBeforeFirstChunk: true });
    app = await startTestApp({ logLines });
    redis = await testRedis();
  }, 60_000);
  afterAll(async () => {
    const repo = createChannelRepository(db, developmentKeyring());
    for (const id of created) await repo.remove(id);
    await app?.stop();
    await Promise.all([failing?.close(), healthy?.close()]);
    redis?.disconnect();
    await db.destroy();
  });

  /** A priced model of this test and two channels on it: `bad` (the failing mock, heavily weighted) and `good`. */
  async function pair(opts: { badWeight?: number } = {}): Promise<{ model: string; bad: string; good: string }> {
    const model = uniqueId('chan-e2e');
    const bad = uniqueId('bad');
    const good = uniqueId('good');
    expect((await app.admin('PUT', `/admin/models/${model}`, TEST_PRICE)).status).toBe(200);
    expect((await app.admin('PUT', `/admin/channels/${bad}`, { base_url: failing.url, api_key: SECRET, models: [model], weight: opts.badWeight ?? 1_000_000, enabled: true })).status).toBe(201);
    expect((await app.admin('PUT', `/admin/channels/${good}`, { base_url: healthy.url, models: [model], weight: 1, enabled: true })).status).toBe(201);
    created.push(bad, good);
    // The worker's router caches the channel list for 1 s.
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    return { model, bad, good };
  }

  /** The tenant's used micros once settlement brought them to `expected` (or the last value after 10 s). */
  async function usedMicros(tenantId: string, expected: number): Promise<number> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const t = await app.admin<{ used_micros: number }>('GET', `/admin/tenants/${tenantId}`);
      if (t.body.used_micros === expected || Date.now() > deadline) return t.body.used_micros;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  describe('admin endpoints', () => {
    it('PUT creates (201) then replaces (200); GET and the list show has_api_key, never the key; omitting api_key keeps it', async () => {
      const id = uniqueId('ch');
      created.push(id);
      const model = uniqueId('unused-model');
      const put = await app.admin<Record<string, unknown>>('PUT', `/admin/channels/${id}`, { base_url: `${healthy.url}/`, api_key: SECRET, models: [model, model], weight: 5, enabled: false });
      expect(put.status).toBe(201);
      expect(put.body).toMatchObject({ id, base_url: healthy.url, models: [model], weight: 5, enabled: false, has_api_key: true });
      expect(put.body).not.toHaveProperty('api_key');
      const replaced = await app.admin('PUT', `/admin/channels/${id}`, { base_url: healthy.url, models: [model], weight: 7, enabled: false });
      expect(replaced).toMatchObject({ status: 200, body: { weight: 7, has_api_key: true } });
      const one = await app.admin('GET', `/admin/channels/${id}`);
      expect(one).toMatchObject({ status: 200, body: { id, weight: 7, has_api_key: true } });
      const list = await app.admin<{ object: string; data: Array<{ id: string }> }>('GET', '/admin/channels');
      expect(list.status).toBe(200);
      expect(list.body.data.map((c) => c.id)).toContain(id);
      expect(JSON.stringify(list.body) + JSON.stringify(one.body) + JSON.stringify(put.body)).not.toContain(SECRET);
      const removed = await app.admin('PUT', `/admin/channels/${id}`, { base_url: healthy.url, api_key: null, models: [model], weight: 7, enabled: false });
      expect(removed).toMatchObject({ status: 200, body: { has_api_key: false } });
      expect(logLines.join('\n')).not.toContain(SECRET);
    });

    it.each([
      ['a base_url that is no URL', { base_url: 'not a url', models: ['m'], weight: 1, enabled: true }, 'base_url'],
      ['a non-http base_url', { base_url: 'ftp://example.com/v1', models: ['m'], weight: 1, enabled: true }, 'base_url'],
      ['no models', { base_url: 'http://127.0.0.1:9/v1', models: [], weight: 1, enabled: true }, 'models'],
      ['weight 0', { base_url: 'http://127.0.0.1:9/v1', models: ['m'], weight: 0, enabled: true }, 'weight'],
      ['a fractional weight', { base_url: 'http://127.0.0.1:9/v1', models: ['m'], weight: 1.5, enabled: true }, 'weight'],
      ['enabled missing', { base_url: 'http://127.0.0.1:9/v1', models: ['m'], weight: 1 }, 'enabled'],
      ['an empty api_key', { base_url: 'http://127.0.0.1:9/v1', api_key: '', models: ['m'], weight: 1, enabled: true }, 'api_key'],
    ])('refuses %s with 400 in the OpenAI error shape, and stores nothing', async (_name, body, param) => {
      const id = uniqueId('bad-ch');
      const res = await app.admin<{ error: { message: string; type: string; code: string; param: string } }>('PUT', `/admin/channels/${id}`, body);
      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({ type: 'invalid_request_error', param });
      expect((await app.admin('GET', `/admin/channels/${id}`)).status).toBe(404);
    });

    it('refuses a malformed id (400) and an unknown field (400); an unknown channel is 404; no token is 401', async () => {
      expect((await app.admin('PUT', '/admin/channels/has%20space', { base_url: 'http://127.0.0.1:9/v1', models: ['m'], weight: 1, enabled: true })).status).toBe(400);
      const extra = await app.admin('PUT', `/admin/channels/${uniqueId('ch')}`, { base_url: 'http://127.0.0.1:9/v1', models: ['m'], weight: 1, enabled: true, apikey: SECRET });
      expect(extra.status).toBe(400);
      expect(JSON.stringify(extra.body)).not.toContain(SECRET);
      expect((await app.admin('GET', `/admin/channels/${uniqueId('none')}`)).status).toBe(404);
      expect((await fetch(`${app.url}/admin/channels`)).status).toBe(401);
    });
  });

  describe('billed requests on two channels, one failing', () => {
    it('fails over before the first byte (JSON and SSE), bills exactly, and cools the failing channel down after 3 failures', async () => {
      const { model, bad } = await pair();
      const { tenantId, key } = await app.tenant();
      const failingBefore = failing.stats().requests;
      const healthyBefore = healthy.stats().requests;
      let expected = 0;
      for (let i = 0; i < 5; i++) {
        const stream = i % 2 === 1;
        const res = await chat(app, key, { model, messages: [{ role: 'user', content: `hello ${i}` }], stream, ...(stream ? { stream_options: { include_usage: true } } : {}) });
        expect(res.status).toBe(200);
        let usage: { prompt_tokens: number; completion_tokens: number };
        if (stream) {
          expect(res.text).toContain('data: [DONE]');
          expect(res.text).not.toContain('"error"');
          const chunks = res.text.split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)) as { usage?: typeof usage });
          usage = chunks.find((c) => c.usage)!.usage!;
        } else {
          usage = (res.json() as { usage: typeof usage }).usage;
        }
        // TEST_PRICE: 1 micro per prompt token, 2 per completion token.
        expected += usage.prompt_tokens + 2 * usage.completion_tokens;
      }
      // Every request was served by the healthy channel; the failing one was tried until its cool-down.
      expect(healthy.stats().requests - healthyBefore).toBe(5);
      expect(failing.stats().requests - failingBefore).toBe(3);
      expect(await redis.exists(CacheKeys.channelCooldown(bad))).toBe(1);
      expect(await usedMicros(tenantId, expected)).toBe(expected);
      expect(logLines.join('\n')).not.toContain(SECRET);
    });

    it('never fails over once output reached the client: the stream ends with an error, the other channel is not called', async () => {
      const model = uniqueId('chan-e2e');
      const first = uniqueId('dies');
      const other = uniqueId('other');
      await app.admin('PUT', `/admin/models/${model}`, TEST_PRICE);
      await app.admin('PUT', `/admin/channels/${first}`, { base_url: healthy.url, models: [model], weight: 1_000_000, enabled: true });
      await app.admin('PUT', `/admin/channels/${other}`, { base_url: failing.url, models: [model], weight: 1, enabled: true });
      created.push(first, other);
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      const { key } = await app.tenant();
      const otherBefore = failing.stats().requests;
      const res = await chat(app, key, { model, stream: true, messages: [{ role: 'user', content: 'tell me [mock:fail=after:3]' }] });
      expect(res.status).toBe(200);
      expect(res.text).toContain('upstream call was interrupted');
      expect(failing.stats().requests).toBe(otherBefore);
    });

    it('binds a conversation (X-Conversation-Id) to the channel that served it, after its successes', async () => {
      const { model, good } = await pair();
      const { key } = await app.tenant();
      const conversation = uniqueId('conv');
      for (let i = 0; i < 2; i++) {
        const res = await chat(app, key, { model, messages: [{ role: 'user', content: `turn ${i}` }] }, { 'X-Conversation-Id': conversation });
        expect(res.status).toBe(200);
      }
      const state = JSON.parse((await redis.get(CacheKeys.conversationAffinity(conversation)))!) as unknown;
      expect(state).toEqual({ kind: 'bound', channel: good, successes: 2 });
    });
  });
});
