/**
 * POST /v1/embeddings and POST /v1/responses end to end (issue 11): the official `openai`
 * client against the gateway, the gateway against the mock upstream over real HTTP, real
 * Temporal, Redis and PostgreSQL. The same lifecycle as chat completions: every request is
 * billed exactly its cost (ledger == price * the tokens the mock reported == Redis), once per
 * Idempotency-Key, a cut stream bills what was delivered, and bad input bills nothing.
 */
import OpenAI from 'openai';
import type { Knex } from 'knex';
import type { Redis } from 'ioredis';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { startTestApp, TEST_MODEL, TEST_PRICE, type TestApp } from '../helpers/app';
import { ledgerUsage, settled } from '../helpers/ledger';
import { testDb, testRedis } from '../helpers/services';
import { devServerEnv } from '../helpers/temporal';
import { readKeyBudget, readTenantQuota } from '../../src/redis/quota-cache';
import { CacheKeys } from '../../src/redis/cache-keys';
import { SearchKeys } from '../../src/workflows/search-attributes';

const EMBEDDING_MODEL = 'text-embedding-3-small';
/** 0.02 units per Mtok in, as OpenAI prices text-embedding-3-small; output is never billed. */
const EMBEDDING_PRICE = { input_price_micros_per_mtok: 20_000, output_price_micros_per_mtok: 0, max_output_tokens: 1 };
/** A small body limit, so the oversized case stays cheap; every other request is far below it. */
const BODY_LIMIT = 256 * 1024;

/** ceil((prompt * in + completion * out) / 1e6): the documented pricing rule. */
const costOf = (price: { input_price_micros_per_mtok: number; output_price_micros_per_mtok: number }, prompt: number, completion: number): number =>
  Math.ceil((prompt * price.input_price_micros_per_mtok + completion * price.output_price_micros_per_mtok) / 1_000_000);

interface Row {
  request_id: string;
  status: string;
  operation: string;
  amount_micros: string;
  reserved_micros: string;
  prompt_tokens: number;
  completion_tokens: number;
  token_source: string;
  model: string;
}

type Tenant = Awaited<ReturnType<TestApp['tenant']>>;

describe('POST /v1/embeddings and POST /v1/responses (issue 11)', () => {
  let app: TestApp;
  let db: Knex;
  let redis: Redis;
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    app = await startTestApp({ env: { MAX_REQUEST_BODY_BYTES: String(BODY_LIMIT) } });
    db = testDb();
    redis = await testRedis();
    env = await devServerEnv();
    expect((await app.admin('PUT', `/admin/models/${EMBEDDING_MODEL}`, EMBEDDING_PRICE)).status).toBe(200);
  }, 60_000);
  afterAll(async () => {
    await app?.stop();
    await db?.destroy();
    redis?.disconnect();
    await env?.teardown();
  });

  const client = (t: Tenant): OpenAI => new OpenAI({ baseURL: `${app.url}/v1`, apiKey: t.key, maxRetries: 0 });

  /** The tenant's usage rows once settlement (which runs after the response) has finished. */
  async function rows(tenantId: string): Promise<Row[]> {
    await settled(db, tenantId);
    return db('billing_transaction').where({ tenant_id: tenantId, kind: 'usage' }).orderBy('id');
  }

  /** Redis, the ledger and the sum of the rows agree, for the tenant and its key. */
  async function expectConverged(t: Tenant, billed: number): Promise<void> {
    expect((await readTenantQuota(redis, t.tenantId))?.usedMicros).toBe(billed);
    expect((await readKeyBudget(redis, t.tenantId, t.apiKeyId))?.spentMicros).toBe(billed);
    expect(await ledgerUsage(db, t.tenantId)).toBe(billed);
  }

  async function post(path: string, key: string, body: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
    return fetch(`${app.url}${path}`, {
      method: 'POST',
      signal,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
  }

  /** The SSE events of a text: [event name, parsed data]. */
  function sseEvents(text: string): Array<[string, Record<string, unknown>]> {
    return text.split('\n\n').filter((e) => e.trim() !== '').map((block) => {
      const name = /^event: (.*)$/m.exec(block)?.[1] ?? 'message';
      const data = /^data: (.*)$/m.exec(block)?.[1] ?? 'null';
      return [name, JSON.parse(data) as Record<string, unknown>];
    });
  }

  describe('embeddings', () => {
    it('embeds a string with embeddings.create and bills its input tokens exactly once', async () => {
      const t = await app.tenant();
      const { data: result, response } = await client(t).embeddings.create({ model: EMBEDDING_MODEL, input: 'The ledger records every charge.' }).withResponse();
      const requestId = response.headers.get('x-request-id')!;
      expect(requestId).toMatch(/^req_[0-9a-f]{32}$/);
      expect(result.data).toHaveLength(1);
      // The client asked for base64 and decoded it: a 1536-float unit vector.
      const vector = result.data[0]!.embedding;
      expect(vector).toHaveLength(1536);
      expect(Math.abs(Math.hypot(...vector) - 1)).toBeLessThan(1e-5);
      const prompt = result.usage.prompt_tokens;
      expect(prompt).toBeGreaterThan(0);
      expect(result.usage.total_tokens).toBe(prompt);

      const [row, ...others] = await rows(t.tenantId);
      expect(others).toEqual([]);
      const cost = costOf(EMBEDDING_PRICE, prompt, 0);
      expect(row).toMatchObject({
        request_id: requestId,
        status: 'committed',
        operation: 'embeddings',
        model: EMBEDDING_MODEL,
        prompt_tokens: prompt,
        completion_tokens: 0,
        token_source: 'upstream',
        amount_micros: String(cost),
        // The estimate is the same tiktoken count: the reservation was exactly the cost.
        reserved_micros: String(cost),
      });
      await expectConverged(t, cost);

      const view = await app.admin<Record<string, unknown>>('GET', `/admin/requests/${requestId}`);
      expect(view.body).toMatchObject({ request_id: requestId, operation: 'embeddings', status: 'committed', amount_micros: cost });
      const described = await env.client.workflow.getHandle(`billed-request:${requestId}`).describe();
      expect(described.typedSearchAttributes.get(SearchKeys.operation)).toBe('embeddings');
    });

    it('embeds an array of strings with dimensions and float encoding, the same input giving the same vector', async () => {
      const t = await app.tenant();
      const input = ['quota', 'budget and balance', 'quota'];
      const result = await client(t).embeddings.create({ model: EMBEDDING_MODEL, input, dimensions: 64, encoding_format: 'float' });
      expect(result.data.map((d) => [d.index, d.embedding.length])).toEqual([[0, 64], [1, 64], [2, 64]]);
      expect(result.data[2]!.embedding).toEqual(result.data[0]!.embedding);
      expect(result.data[1]!.embedding).not.toEqual(result.data[0]!.embedding);
      const [row] = await rows(t.tenantId);
      expect(row).toMatchObject({ prompt_tokens: result.usage.prompt_tokens, completion_tokens: 0, amount_micros: String(costOf(EMBEDDING_PRICE, result.usage.prompt_tokens, 0)) });
      await expectConverged(t, Number(row!.amount_micros));
    });

    it('bills token-array inputs by their length', async () => {
      const t = await app.tenant();
      const one = await client(t).embeddings.create({ model: EMBEDDING_MODEL, input: [1, 2, 3, 4] });
      const many = await client(t).embeddings.create({ model: EMBEDDING_MODEL, input: [[10, 20, 30], [40, 50], [60]] });
      expect(one.usage.prompt_tokens).toBe(4);
      expect(many.usage.prompt_tokens).toBe(6);
      expect(many.data).toHaveLength(3);
      const billed = await rows(t.tenantId);
      expect(billed.map((r) => [r.prompt_tokens, r.completion_tokens, r.token_source])).toEqual([[4, 0, 'upstream'], [6, 0, 'upstream']]);
      // 4 and 6 tokens at 20,000 micros per Mtok: each rounds up to 1 micro (once per request).
      expect(billed.map((r) => r.amount_micros)).toEqual(['1', '1']);
      await expectConverged(t, 2);
    });

    it('counts the input itself when the upstream reports no usage', async () => {
      const t = await app.tenant();
      const res = await post('/v1/embeddings', t.key, { model: EMBEDDING_MODEL, input: 'no usage here [mock:omit_usage]' });
      expect(res.status).toBe(200);
      expect(((await res.json()) as { usage?: unknown }).usage).toBeUndefined();
      const [row] = await rows(t.tenantId);
      expect(row).toMatchObject({ status: 'committed', token_source: 'tiktoken', completion_tokens: 0 });
      expect(row!.amount_micros).toBe(row!.reserved_micros);
    });

    it('voids the reservation when the upstream fails (502), billing nothing', async () => {
      const t = await app.tenant();
      const res = await post('/v1/embeddings', t.key, { model: EMBEDDING_MODEL, input: 'boom [mock:status=400]' });
      expect(res.status).toBe(502);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('upstream_error');
      expect((await rows(t.tenantId)).map((r) => [r.status, r.amount_micros])).toEqual([['voided', '0']]);
      await expectConverged(t, 0);
    });
  });

  describe('responses', () => {
    it('answers responses.create (JSON) and bills input and output tokens from its usage', async () => {
      const t = await app.tenant();
      const { data: response, response: http } = await client(t).responses
        .create({ model: TEST_MODEL, instructions: 'Answer briefly.', input: 'What is a ledger? [mock:tokens=12]' })
        .withResponse();
      const requestId = http.headers.get('x-request-id')!;
      expect(response.object).toBe('response');
      expect(response.status).toBe('completed');
      expect(response.output_text.split(' ')).toHaveLength(12);
      const usage = response.usage!;
      expect(usage.output_tokens).toBe(12);

      const [row, ...others] = await rows(t.tenantId);
      expect(others).toEqual([]);
      const cost = costOf(TEST_PRICE, usage.input_tokens, usage.output_tokens);
      expect(row).toMatchObject({
        request_id: requestId,
        status: 'committed',
        operation: 'responses',
        prompt_tokens: usage.input_tokens,
        completion_tokens: 12,
        token_source: 'upstream',
        amount_micros: String(cost),
        // The worst case: the same input count and the model's whole output cap.
        reserved_micros: String(costOf(TEST_PRICE, usage.input_tokens, TEST_PRICE.max_output_tokens)),
      });
      await expectConverged(t, cost);
      expect(app.mock.stats().lastRequest?.maxTokens).toBe(TEST_PRICE.max_output_tokens);
      const view = await app.admin<Record<string, unknown>>('GET', `/admin/requests/${requestId}`);
      expect(view.body).toMatchObject({ operation: 'responses', amount_micros: cost });
      const described = await env.client.workflow.getHandle(`billed-request:${requestId}`).describe();
      expect(described.typedSearchAttributes.get(SearchKeys.operation)).toBe('responses');
    });

    it('streams responses.create with the Responses event types, usage from response.completed, billed once', async () => {
      const t = await app.tenant();
      const stream = await client(t).responses.create({
        model: TEST_MODEL,
        stream: true,
        input: [{ role: 'user', content: [{ type: 'input_text', text: 'stream please [mock:tokens=24]' }] }],
      });
      const types: string[] = [];
      let text = '';
      let usage: OpenAI.Responses.ResponseUsage | undefined;
      for await (const event of stream) {
        types.push(event.type);
        if (event.type === 'response.output_text.delta') text += event.delta;
        if (event.type === 'response.completed') usage = event.response.usage;
      }
      expect(types.slice(0, 4)).toEqual(['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added']);
      expect(types.filter((type) => type === 'response.output_text.delta')).toHaveLength(24);
      expect(types.slice(-4)).toEqual(['response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed']);
      expect(text.split(' ')).toHaveLength(24);
      expect(usage?.output_tokens).toBe(24);

      const [row] = await rows(t.tenantId);
      const cost = costOf(TEST_PRICE, usage!.input_tokens, 24);
      expect(row).toMatchObject({ status: 'committed', operation: 'responses', prompt_tokens: usage!.input_tokens, completion_tokens: 24, token_source: 'upstream', amount_micros: String(cost) });
      await expectConverged(t, cost);
    });

    it('relays the upstream events byte for byte (event names, data, no [DONE])', async () => {
      const t = await app.tenant();
      const res = await post('/v1/responses', t.key, { model: TEST_MODEL, stream: true, input: 'exact relay [mock:tokens=3]' });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
      const text = await res.text();
      expect(text).not.toContain('[DONE]');
      const events = sseEvents(text);
      expect(events.map(([name, data]) => name === data.type)).toEqual(events.map(() => true));
      expect(events.map(([, data]) => data.sequence_number)).toEqual(events.map((_, i) => i));
      await rows(t.tenantId);
    });

    it('reserves max_output_tokens, sends it upstream, and bills an incomplete answer its delivered tokens', async () => {
      const t = await app.tenant();
      const response = await client(t).responses.create({ model: TEST_MODEL, input: 'a long story [mock:tokens=40]', max_output_tokens: 16 });
      expect(response.status).toBe('incomplete');
      expect(response.incomplete_details).toEqual({ reason: 'max_output_tokens' });
      expect(app.mock.stats().lastRequest?.maxTokens).toBe(16);
      const [row] = await rows(t.tenantId);
      expect(row).toMatchObject({ status: 'committed', completion_tokens: 16, reserved_micros: String(costOf(TEST_PRICE, response.usage!.input_tokens, 16)) });
      expect(row!.amount_micros).toBe(row!.reserved_micros);
    });

    it('counts the delivered text with tiktoken when response.completed carries no usage', async () => {
      const t = await app.tenant();
      const res = await post('/v1/responses', t.key, { model: TEST_MODEL, stream: true, input: 'count it yourself [mock:omit_usage] [mock:tokens=10]' });
      expect(res.status).toBe(200);
      await res.text();
      const [row] = await rows(t.tenantId);
      // The mock's words are one token each: tiktoken's count of the deltas is exact.
      expect(row).toMatchObject({ status: 'committed', token_source: 'tiktoken', completion_tokens: 10 });
    });

    it('bills the delivered deltas when the upstream breaks off mid-stream, and ends the stream with an error event', async () => {
      const t = await app.tenant();
      // 4 opening events, then 5 deltas, then the socket dies.
      const res = await post('/v1/responses', t.key, { model: TEST_MODEL, stream: true, input: 'break [mock:fail=after:9] [mock:tokens=20]' });
      expect(res.status).toBe(200);
      const events = sseEvents(await res.text());
      expect(events.filter(([name]) => name === 'response.output_text.delta')).toHaveLength(5);
      expect(events.at(-1)).toEqual(['error', expect.objectContaining({ type: 'error', code: 'upstream_error', message: expect.any(String) })]);
      const [row] = await rows(t.tenantId);
      expect(row).toMatchObject({ status: 'committed', completion_tokens: 5, token_source: 'tiktoken' });
      await expectConverged(t, Number(row!.amount_micros));
    });

    it('a client that disconnects mid-stream cancels the upstream call and is billed what was delivered, once', async () => {
      const t = await app.tenant();
      const cancelledBefore = app.mock.stats().cancelled;
      const abort = new AbortController();
      const res = await post('/v1/responses', t.key, { model: TEST_MODEL, stream: true, input: 'a long story [mock:tokens=60] [mock:latency=40]' }, {}, abort.signal);
      expect(res.status).toBe(200);
      const requestId = res.headers.get('x-request-id')!;
      const reader = res.body!.getReader();
      const decoder = new TextDecoder();
      let seen = '';
      while ((seen.match(/event: response\.output_text\.delta/g) ?? []).length < 5) {
        const { value, done } = (await reader.read()) as { value?: Uint8Array; done: boolean };
        if (done) break;
        seen += decoder.decode(value, { stream: true });
      }
      const clientDeltas = (seen.match(/event: response\.output_text\.delta/g) ?? []).length;
      abort.abort();

      const [row, ...others] = await rows(t.tenantId);
      expect(others).toEqual([]);
      const relayed = await redis.xrange(CacheKeys.requestStream(t.tenantId, requestId), '-', '+');
      const relayedDeltas = relayed.filter(([, f]) => f[1] === 'chunk' && (JSON.parse(f[3]!) as { type: string }).type === 'response.output_text.delta').length;
      expect(row!.status).toBe('committed');
      expect(row!.completion_tokens).toBe(relayedDeltas); // every relayed token billed, no more
      expect(relayedDeltas).toBeGreaterThanOrEqual(clientDeltas);
      expect(relayedDeltas).toBeLessThan(60);
      expect(row!.token_source).toBe('tiktoken');
      expect(Number(row!.amount_micros)).toBeLessThan(Number(row!.reserved_micros));
      await expectConverged(t, Number(row!.amount_micros));
      expect(app.mock.stats().cancelled).toBe(cancelledBefore + 1);
    }, 60_000);
  });

  describe('idempotency', () => {
    it.each([
      ['/v1/responses', { model: TEST_MODEL, input: 'once only' }, { model: TEST_MODEL, input: 'something else' }],
      ['/v1/embeddings', { model: EMBEDDING_MODEL, input: 'once only' }, { model: EMBEDDING_MODEL, input: 'something else' }],
    ])('%s: the same Idempotency-Key twice bills once and answers the same; with another body it is refused (409)', async (path, body, other) => {
      const t = await app.tenant();
      const headers = { 'Idempotency-Key': `key-${path}` };
      const before = app.mock.stats().requests;
      const first = await post(path, t.key, body, headers);
      const firstText = await first.text();
      expect(first.status).toBe(200);
      await settled(db, t.tenantId);
      const second = await post(path, t.key, body, headers);
      expect(second.status).toBe(200);
      expect(await second.text()).toBe(firstText);
      expect(second.headers.get('x-request-id')).toBe(first.headers.get('x-request-id'));
      const conflict = await post(path, t.key, other, headers);
      expect(conflict.status).toBe(409);
      expect(((await conflict.json()) as { error: { type: string } }).error).toMatchObject({ type: 'invalid_request_error' });

      expect(app.mock.stats().requests).toBe(before + 1);
      const billed = await rows(t.tenantId);
      expect(billed.map((r) => [r.request_id, r.status])).toEqual([[first.headers.get('x-request-id'), 'committed']]);
      await expectConverged(t, Number(billed[0]!.amount_micros));
    });
  });

  describe('bad input bills nothing', () => {
    let t: Tenant;
    let upstreamBefore: number;
    beforeAll(async () => {
      t = await app.tenant({ quotaMicros: 1_000_000 });
      upstreamBefore = app.mock.stats().requests;
    });
    afterAll(async () => {
      // Nothing below reached the upstream, the ledger, Redis or Temporal.
      expect(app.mock.stats().requests).toBe(upstreamBefore);
      expect(await db('billing_transaction').where({ tenant_id: t.tenantId })).toEqual([]);
      expect((await readTenantQuota(redis, t.tenantId))?.usedMicros ?? 0).toBe(0);
      expect((await env.client.workflow.count(`TenantId = "${t.tenantId}"`)).count).toBe(0);
    });

    const tooMany = Array.from({ length: 2049 }, () => 'x');
    const cases: Array<[string, string, number, string, unknown]> = [
      ['/v1/embeddings', 'malformed JSON', 400, 'invalid_request_error', '{"model": "text-embedding-3-small", "input": ['],
      ['/v1/embeddings', 'missing input', 400, 'invalid_request_error', { model: EMBEDDING_MODEL }],
      ['/v1/embeddings', 'an empty string', 400, 'invalid_request_error', { model: EMBEDDING_MODEL, input: '' }],
      ['/v1/embeddings', 'an empty array', 400, 'invalid_request_error', { model: EMBEDDING_MODEL, input: [] }],
      ['/v1/embeddings', 'an empty token array', 400, 'invalid_request_error', { model: EMBEDDING_MODEL, input: [[]] }],
      ['/v1/embeddings', 'input of the wrong type', 400, 'invalid_request_error', { model: EMBEDDING_MODEL, input: { text: 'hi' } }],
      ['/v1/embeddings', 'mixed strings and tokens', 400, 'invalid_request_error', { model: EMBEDDING_MODEL, input: ['hi', 12] }],
      ['/v1/embeddings', 'a negative token', 400, 'invalid_request_error', { model: EMBEDDING_MODEL, input: [1, -2] }],
      ['/v1/embeddings', 'dimensions of zero', 400, 'invalid_request_error', { model: EMBEDDING_MODEL, input: 'hi', dimensions: 0 }],
      ['/v1/embeddings', 'an unknown encoding_format', 400, 'invalid_request_error', { model: EMBEDDING_MODEL, input: 'hi', encoding_format: 'int8' }],
      ['/v1/embeddings', 'stream: true', 400, 'invalid_request_error', { model: EMBEDDING_MODEL, input: 'hi', stream: true }],
      ['/v1/embeddings', 'more than 2048 inputs', 400, 'invalid_request_error', { model: EMBEDDING_MODEL, input: tooMany }],
      ['/v1/embeddings', 'an unknown model', 404, 'model_not_found', { model: 'no-such-embedder', input: 'hi' }],
      ['/v1/embeddings', 'a body over MAX_REQUEST_BODY_BYTES', 413, 'request_too_large', { model: EMBEDDING_MODEL, input: 'x '.repeat(BODY_LIMIT) }],
      ['/v1/responses', 'malformed JSON', 400, 'invalid_request_error', '{"model": "gpt-4o-mini", "input": '],
      ['/v1/responses', 'missing input', 400, 'invalid_request_error', { model: TEST_MODEL }],
      ['/v1/responses', 'an empty string', 400, 'invalid_request_error', { model: TEST_MODEL, input: '' }],
      ['/v1/responses', 'an empty array', 400, 'invalid_request_error', { model: TEST_MODEL, input: [] }],
      ['/v1/responses', 'input of the wrong type', 400, 'invalid_request_error', { model: TEST_MODEL, input: 42 }],
      ['/v1/responses', 'a message with an unknown role', 400, 'invalid_request_error', { model: TEST_MODEL, input: [{ role: 'robot', content: 'hi' }] }],
      ['/v1/responses', 'a message without content', 400, 'invalid_request_error', { model: TEST_MODEL, input: [{ role: 'user' }] }],
      ['/v1/responses', 'an input_text part without text', 400, 'invalid_request_error', { model: TEST_MODEL, input: [{ role: 'user', content: [{ type: 'input_text' }] }] }],
      ['/v1/responses', 'instructions of the wrong type', 400, 'invalid_request_error', { model: TEST_MODEL, input: 'hi', instructions: ['be brief'] }],
      ['/v1/responses', 'max_output_tokens of zero', 400, 'invalid_request_error', { model: TEST_MODEL, input: 'hi', max_output_tokens: 0 }],
      ['/v1/responses', 'max_output_tokens fractional', 400, 'invalid_request_error', { model: TEST_MODEL, input: 'hi', max_output_tokens: 1.5 }],
      ['/v1/responses', 'stream as a string', 400, 'invalid_request_error', { model: TEST_MODEL, input: 'hi', stream: 'yes' }],
      ['/v1/responses', 'tools not an array', 400, 'invalid_request_error', { model: TEST_MODEL, input: 'hi', tools: { type: 'function' } }],
      ['/v1/responses', 'background: true', 400, 'invalid_request_error', { model: TEST_MODEL, input: 'hi', background: true }],
      ['/v1/responses', 'an unknown model', 404, 'model_not_found', { model: 'no-such-model', input: 'hi' }],
      ['/v1/responses', 'a body over MAX_REQUEST_BODY_BYTES', 413, 'request_too_large', { model: TEST_MODEL, input: 'x '.repeat(BODY_LIMIT) }],
    ];

    it.each(cases)('%s with %s -> %i %s', async (path, _name, status, code, body) => {
      const res = await post(path, t.key, body);
      expect(res.status).toBe(status);
      expect(await res.json()).toEqual({ error: expect.objectContaining({ message: expect.any(String), type: expect.any(String), code }) });
      expect(res.headers.get('x-request-id')).toMatch(/^req_[0-9a-f]{32}$/);
    });

    it.each([
      ['/v1/embeddings', { model: EMBEDDING_MODEL, input: 'hi' }],
      ['/v1/responses', { model: TEST_MODEL, input: 'hi' }],
    ])('%s with X-Conversation-Id -> 400 (conversations are chat only)', async (path, body) => {
      const res = await post(path, t.key, body, { 'X-Conversation-Id': 'conv-1' });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { message: string } }).error.message).toContain('X-Conversation-Id');
    });

    it.each([
      ['/v1/embeddings', { model: EMBEDDING_MODEL, input: 'hi' }],
      ['/v1/responses', { model: TEST_MODEL, input: 'hi' }],
    ])('%s without a valid API key -> 401 invalid_api_key', async (path, body) => {
      const res = await post(path, 'sk-bq-not-a-real-key', body);
      expect(res.status).toBe(401);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('invalid_api_key');
    });
  });

  describe('refusals at the edge, before any workflow', () => {
    it.each([
      ['/v1/embeddings', { model: EMBEDDING_MODEL, input: 'hello '.repeat(100) }],
      ['/v1/responses', { model: TEST_MODEL, input: 'hello' }],
    ])('%s: a tenant short of quota gets 429 insufficient_quota, no workflow starts, nothing is billed', async (path, body) => {
      const t = await app.tenant({ quotaMicros: 1 });
      const before = app.mock.stats().requests;
      const res = await post(path, t.key, body);
      expect(res.status).toBe(429);
      expect(await res.json()).toEqual({ error: { message: expect.any(String), type: 'insufficient_quota', code: 'insufficient_quota' } });
      const requestId = res.headers.get('x-request-id')!;
      await expect(env.client.workflow.getHandle(`billed-request:${requestId}`).describe()).rejects.toThrow(/not found/i);
      expect(app.mock.stats().requests).toBe(before);
      expect(await db('billing_transaction').where({ tenant_id: t.tenantId })).toEqual([]);
    });
  });
});
