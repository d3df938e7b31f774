/**
 * Billing what providers bill (issue 11, items 2-5), through the whole stack and the official
 * `openai` client: cached prompt tokens at the model's cached-input price, reasoning tokens
 * recorded, the usage of a stream's last chunk kept (not an earlier running one), the
 * reservation covering `n` choices, tool and response-format definitions and images (a sweep of
 * request shapes against the mock upstream: settlement <= reservation, and the reservation is
 * the documented rule), bad input refused with a 4xx that bills nothing, the price catalogue on
 * a fresh start, and unknown routes answered with a JSON 404 in the OpenAI shape.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Knex } from 'knex';
import OpenAI from 'openai';
import { countDefinitionTokens, countPromptTokens } from '../../src/billing/token-count';
import { chatCompletionRequestSchema } from '../../src/openai/chat-request';
import { IMAGE_FIXTURES_DIR } from '../helpers/image-server';
import { ADMIN_TOKEN, chat, startTestApp, TEST_MODEL, TEST_PRICE, type TestApp } from '../helpers/app';
import { settled } from '../helpers/ledger';
import { testDb, uniqueId } from '../helpers/services';

let db: Knex;
let app: TestApp;
beforeAll(async () => {
  db = testDb();
  app = await startTestApp();
}, 60_000);
afterAll(async () => {
  await app?.stop();
  await db?.destroy();
});

interface LedgerRow {
  request_id: string;
  status: string;
  reserved_micros: string;
  amount_micros: string | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  cached_prompt_tokens: number | null;
  reasoning_tokens: number | null;
  audio_prompt_tokens: number | null;
  audio_completion_tokens: number | null;
  token_source: string | null;
}

async function row(tenantId: string, requestId: string): Promise<LedgerRow> {
  await settled(db, tenantId);
  const found = await db<LedgerRow>('billing_transaction').where({ request_id: requestId }).first();
  if (!found) throw new Error(`no ledger row for ${requestId}`);
  return found;
}

const client = (key: string): OpenAI => new OpenAI({ baseURL: `${app.url}/v1`, apiKey: key, maxRetries: 0 });

/** A model priced by the operator with a cached-input price: 3 micros per prompt token, 0.3 cached, 7 per completion token. */
async function cachedModel(): Promise<{ model: string; cost: (prompt: number, cached: number, completion: number) => number }> {
  const model = uniqueId('cached-model');
  const put = await app.admin('PUT', `/admin/models/${model}`, { input_price_micros_per_mtok: 3_000_000, cached_input_price_micros_per_mtok: 300_000, output_price_micros_per_mtok: 7_000_000, max_output_tokens: 256 });
  expect(put.status).toBe(200);
  // docs/pricing.md: ceil((uncached * in + cached * cached_in + completion * out) / 1e6), once per request.
  const cost = (prompt: number, cached: number, completion: number): number => Math.ceil(((prompt - cached) * 3_000_000 + cached * 300_000 + completion * 7_000_000) / 1_000_000);
  return { model, cost };
}

describe('token classes (issue 11, item 3)', () => {
  it('prices cached prompt tokens at the cached-input price, exactly, and shows every class in GET /admin/requests/:id', async () => {
    const t = await app.tenant();
    const { model, cost } = await cachedModel();
    const messages = [{ role: 'user' as const, content: 'a long shared system context, then a question [mock:tokens=9] [mock:cached=11] [mock:reasoning=5]' }];
    const { data: completion, response } = await client(t.key).chat.completions.create({ model, messages }).withResponse();
    const requestId = response.headers.get('x-request-id')!;
    const prompt = countPromptTokens(messages, model);
    // The client sees the billed usage with its details.
    expect(completion.usage).toMatchObject({
      prompt_tokens: prompt,
      completion_tokens: 14,
      prompt_tokens_details: { cached_tokens: 11 },
      completion_tokens_details: { reasoning_tokens: 5 },
    });

    const entry = await row(t.tenantId, requestId);
    expect(entry).toMatchObject({ status: 'committed', prompt_tokens: prompt, completion_tokens: 14, cached_prompt_tokens: 11, reasoning_tokens: 5, audio_prompt_tokens: 0, audio_completion_tokens: 0, token_source: 'upstream' });
    expect(Number(entry.amount_micros)).toBe(cost(prompt, 11, 14));
    // Billed at the full input price it would cost more: the cached price is what was applied.
    expect(Number(entry.amount_micros)).toBeLessThan(cost(prompt, 0, 14));

    const view = await app.admin<Record<string, unknown>>('GET', `/admin/requests/${requestId}`);
    expect(view.body).toMatchObject({ request_id: requestId, amount_micros: cost(prompt, 11, 14), cached_prompt_tokens: 11, reasoning_tokens: 5, audio_prompt_tokens: 0, audio_completion_tokens: 0 });
    const tenant = await app.admin<{ used_micros: number }>('GET', `/admin/tenants/${t.tenantId}`);
    expect(tenant.body.used_micros).toBe(cost(prompt, 11, 14));
  });

  it('a stream whose usage arrives only in the last chunk, after running usage without details: the last chunk\'s classes are billed', async () => {
    const t = await app.tenant();
    const { model, cost } = await cachedModel();
    const messages = [{ role: 'user' as const, content: 'stream it [mock:tokens=6] [mock:cached=8] [mock:reasoning=3] [mock:interim_usage]' }];
    const { data: stream, response } = await client(t.key).chat.completions.create({ model, messages, stream: true, stream_options: { include_usage: true } }).withResponse();
    const usages: OpenAI.CompletionUsage[] = [];
    let text = '';
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) usages.push(chunk.usage);
    }
    // The gateway relays one usage, its own, in the final chunk; the upstream's running ones are not passed on.
    expect(usages).toHaveLength(1);
    expect(text.split(' ')).toHaveLength(6);
    const prompt = countPromptTokens(messages, model);
    expect(usages[0]).toMatchObject({ prompt_tokens: prompt, completion_tokens: 9, prompt_tokens_details: { cached_tokens: 8 }, completion_tokens_details: { reasoning_tokens: 3 } });

    const entry = await row(t.tenantId, response.headers.get('x-request-id')!);
    expect(entry).toMatchObject({ status: 'committed', completion_tokens: 9, cached_prompt_tokens: 8, reasoning_tokens: 3, token_source: 'upstream' });
    expect(Number(entry.amount_micros)).toBe(cost(prompt, 8, 9));
  });

  it('a stream whose client asked for no usage is still billed from the upstream\'s final usage chunk, classes included', async () => {
    const t = await app.tenant();
    const { model, cost } = await cachedModel();
    const messages = [{ role: 'user' as const, content: 'quiet stream [mock:tokens=4] [mock:cached=6]' }];
    const res = await chat(app, t.key, { model, messages, stream: true });
    expect(res.status).toBe(200);
    expect(res.text).not.toContain('"usage"');
    const entry = await row(t.tenantId, res.headers.get('x-request-id')!);
    const prompt = countPromptTokens(messages, model);
    expect(entry).toMatchObject({ token_source: 'upstream', cached_prompt_tokens: 6, completion_tokens: 4 });
    expect(Number(entry.amount_micros)).toBe(cost(prompt, 6, 4));
  });

  it('the Responses API: input_tokens_details.cached_tokens at the cached-input price, reasoning recorded, JSON and stream alike', async () => {
    const { model, cost } = await cachedModel();
    for (const stream of [false, true]) {
      const t = await app.tenant();
      const input = `a cached context, then a question [mock:tokens=7] [mock:cached=9] [mock:reasoning=4] ${stream ? 'streamed' : 'json'}`;
      const request = { model, input, max_output_tokens: 64 };
      let requestId: string;
      let usage: OpenAI.Responses.ResponseUsage | undefined;
      if (stream) {
        const { data: events, response } = await client(t.key).responses.create({ ...request, stream: true }).withResponse();
        requestId = response.headers.get('x-request-id')!;
        for await (const event of events) if (event.type === 'response.completed') usage = event.response.usage;
      } else {
        const { data: answer, response } = await client(t.key).responses.create(request).withResponse();
        requestId = response.headers.get('x-request-id')!;
        usage = answer.usage;
      }
      // Reasoning tokens are part of output_tokens and of its cap, as OpenAI reports them.
      expect(usage).toMatchObject({ output_tokens: 11, input_tokens_details: { cached_tokens: 9 }, output_tokens_details: { reasoning_tokens: 4 } });
      const entry = await row(t.tenantId, requestId);
      expect(entry).toMatchObject({ status: 'committed', prompt_tokens: usage!.input_tokens, completion_tokens: 11, cached_prompt_tokens: 9, reasoning_tokens: 4, token_source: 'upstream' });
      expect(Number(entry.amount_micros)).toBe(cost(usage!.input_tokens, 9, 11));
      expect(Number(entry.amount_micros)).toBeLessThan(cost(usage!.input_tokens, 0, 11));
    }
  });

  it('a model priced without a cached price bills cached tokens at the input price', async () => {
    const t = await app.tenant();
    const messages = [{ role: 'user' as const, content: 'no discount [mock:tokens=3] [mock:cached=5]' }];
    const res = await chat(app, t.key, { model: TEST_MODEL, messages });
    const entry = await row(t.tenantId, res.headers.get('x-request-id')!);
    const prompt = countPromptTokens(messages, TEST_MODEL);
    expect(entry.cached_prompt_tokens).toBe(5);
    expect(Number(entry.amount_micros)).toBe(prompt + 2 * 3);
  });
});

/** TEST_PRICE: 1 micro per prompt token, 2 per completion token, 64 tokens per choice at most. */
const documentedReservation = (body: Record<string, unknown>): number => {
  const request = chatCompletionRequestSchema.parse(body);
  const prompt = countPromptTokens(request.messages, TEST_MODEL) + countDefinitionTokens(request, TEST_MODEL);
  const perChoice = Math.min(request.max_completion_tokens ?? request.max_tokens ?? TEST_PRICE.max_output_tokens, TEST_PRICE.max_output_tokens);
  return prompt + 2 * (request.n ?? 1) * perChoice;
};

describe('the reservation covers the real worst case (issue 11, item 2)', () => {
  const weather = { type: 'function', function: { name: 'get_weather', description: 'Gets the weather for a city.', parameters: { type: 'object', properties: { city: { type: 'string', description: 'The city.' }, unit: { type: 'string', enum: ['c', 'f'] } }, required: ['city'] } } };
  const booking = { type: 'function', function: { name: 'book_table', description: 'Books a table.', parameters: { type: 'object', properties: { guests: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' }, age: { type: 'integer' } } } } } } } };
  const schema = { type: 'json_schema', json_schema: { name: 'forecast', description: 'A forecast.', schema: { type: 'object', properties: { summary: { type: 'string' }, high: { type: 'number' }, low: { type: 'number' } }, required: ['summary'] } } };
  const inlineJpeg = `data:image/jpeg;base64,${fs.readFileSync(path.join(IMAGE_FIXTURES_DIR, 'square-1024.jpg')).toString('base64')}`;
  // Every choice runs past the cap, the worst case the reservation must cover.
  const text = (extra = ''): string => `worst case please [mock:tokens=500]${extra}`;
  const user = (extra?: string) => [{ role: 'user', content: text(extra) }];

  const shapes: Array<[string, Record<string, unknown>]> = [
    ['plain', { messages: user() }],
    ['n = 3', { messages: user(), n: 3 }],
    ['n = 2 with max_tokens 20', { messages: user(), n: 2, max_tokens: 20 }],
    ['two tools', { messages: user(), tools: [weather, booking] }],
    ['tools, tool_choice and n = 2', { messages: user(), tools: [weather], tool_choice: { type: 'function', function: { name: 'get_weather' } }, n: 2 }],
    ['deprecated functions', { messages: user(), functions: [weather.function] }],
    ['a json schema response format', { messages: user(), response_format: schema }],
    ['images (inline and of unknown size) with n = 2', {
      messages: [{ role: 'user', content: [{ type: 'text', text: text() }, { type: 'image_url', image_url: { url: inlineJpeg } }, { type: 'image_url', image_url: { url: 'http://127.0.0.1:9/unreachable.png' } }] }],
      n: 2,
    }],
    ['n = 3 without upstream usage (counted by tiktoken, choice by choice)', { messages: user(' [mock:omit_usage]'), n: 3 }],
    ['reasoning and cached tokens with n = 2', { messages: user(' [mock:reasoning=30] [mock:cached=10]'), n: 2, max_completion_tokens: 40 }],
    ['everything at once', { messages: user(' [mock:reasoning=8]'), n: 3, tools: [weather, booking], response_format: schema, max_tokens: 50 }],
  ];
  const modes: Array<[string, Record<string, unknown>]> = [
    ['JSON', {}],
    ['SSE with usage', { stream: true, stream_options: { include_usage: true } }],
    ['SSE without usage', { stream: true }],
  ];
  const cases = shapes.flatMap(([shape, body]) => modes.map(([mode, extra]) => [`${shape}, ${mode}`, { model: TEST_MODEL, ...body, ...extra }] as const));

  it.each(cases)('%s: reserved by the documented rule, settled within it', async (_label, body) => {
    const t = await app.tenant();
    const res = await chat(app, t.key, body);
    expect(res.status).toBe(200);
    const entry = await row(t.tenantId, res.headers.get('x-request-id')!);
    expect(entry.status).toBe('committed');
    expect(Number(entry.reserved_micros)).toBe(documentedReservation(body));
    expect(Number(entry.amount_micros)).toBeGreaterThan(0);
    expect(Number(entry.amount_micros)).toBeLessThanOrEqual(Number(entry.reserved_micros));
    const n = (body as { n?: number }).n ?? 1;
    if (n > 1) {
      // Every choice ran to the cap: a reservation of one choice would not have covered the bill.
      expect(entry.completion_tokens).toBe(n * Math.min((body as { max_tokens?: number }).max_tokens ?? (body as { max_completion_tokens?: number }).max_completion_tokens ?? 64, 64));
      expect(Number(entry.amount_micros)).toBeGreaterThan(documentedReservation({ ...body, n: 1 }));
    }
  }, 30_000);

  it('n and tools through the openai client: all choices returned, reserved and billed as documented', async () => {
    const t = await app.tenant();
    const body = { model: TEST_MODEL, messages: [{ role: 'user' as const, content: 'pick one [mock:tokens=10]' }], n: 4, tools: [weather as OpenAI.ChatCompletionTool], max_tokens: 12 };
    const { data: completion, response } = await client(t.key).chat.completions.create(body).withResponse();
    expect(completion.choices.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    expect(completion.usage!.completion_tokens).toBe(40);
    const entry = await row(t.tenantId, response.headers.get('x-request-id')!);
    expect(Number(entry.reserved_micros)).toBe(documentedReservation(body));
    expect(Number(entry.amount_micros)).toBe(completion.usage!.prompt_tokens + 2 * 40);
    // The tools counted in the prompt, as the upstream billed them, and covered by the estimate.
    expect(completion.usage!.prompt_tokens).toBeGreaterThan(countPromptTokens(body.messages, TEST_MODEL));
    expect(completion.usage!.prompt_tokens).toBeLessThanOrEqual(countPromptTokens(body.messages, TEST_MODEL) + countDefinitionTokens(body, TEST_MODEL));
  });
});

describe('bad input gets a clear 4xx and bills nothing (issue 11, item 6)', () => {
  const base = { model: TEST_MODEL, messages: [{ role: 'user', content: 'hi' }] };
  const bad: Array<[string, Record<string, unknown>, string]> = [
    ['n = 0', { ...base, n: 0 }, 'n'],
    ['n as a string', { ...base, n: '3' }, 'n'],
    ['n past 128', { ...base, n: 1000 }, 'n'],
    ['tools as an object', { ...base, tools: { type: 'function' } }, 'tools'],
    ['a function tool without a function', { ...base, tools: [{ type: 'function' }] }, 'tools[0].function'],
    ['a function without a name', { ...base, tools: [{ type: 'function', function: { description: 'x' } }] }, 'tools[0].function.name'],
    ['functions as a string', { ...base, functions: 'lookup' }, 'functions'],
    ['response_format as a string', { ...base, response_format: 'json' }, 'response_format'],
    ['an unknown response format', { ...base, response_format: { type: 'yaml' } }, 'response_format.type'],
    ['json_schema without its schema', { ...base, response_format: { type: 'json_schema' } }, 'response_format.json_schema'],
    ['an unknown tool_choice', { ...base, tool_choice: 'sometimes' }, 'tool_choice'],
  ];

  it.each(bad)('%s -> 400 naming the field, no ledger row, nothing reserved', async (_label, body, param) => {
    const t = await app.tenant();
    const before = app.mock.stats().requests;
    const res = await chat(app, t.key, body);
    expect(res.status).toBe(400);
    expect((res.json() as { error: Record<string, unknown> }).error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_request_error', param });
    expect(await db('billing_transaction').where({ tenant_id: t.tenantId })).toHaveLength(0);
    expect((await app.admin<{ used_micros: number }>('GET', `/admin/tenants/${t.tenantId}`)).body.used_micros).toBe(0);
    expect(app.mock.stats().requests).toBe(before);
  });

  it('through the openai client: a BadRequestError, and an unpriced model a 404 model_not_found, billing nothing', async () => {
    const t = await app.tenant();
    const openai = client(t.key);
    await expect(openai.chat.completions.create({ ...base, messages: [{ role: 'user', content: 'hi' }], n: -1 })).rejects.toMatchObject({ status: 400, param: 'n' });
    const unknown = uniqueId('no-such-model');
    await expect(openai.chat.completions.create({ model: unknown, messages: [{ role: 'user', content: 'hi' }] })).rejects.toMatchObject({ status: 404, code: 'model_not_found' });
    expect(await db('billing_transaction').where({ tenant_id: t.tenantId })).toHaveLength(0);
  });
});

describe('the price catalogue on a running stack (issue 11, item 4)', () => {
  it('a well-known model is priced from the first start; the operator\'s price of another one stays', async () => {
    const t = await app.tenant();
    const models = await client(t.key).models.list();
    const byId = new Map(models.data.map((m) => [m.id, m as unknown as { pricing: Record<string, number> }]));
    // TEST_MODEL (gpt-4o-mini) is in the catalogue, but the test harness PUT its own price: the operator's wins.
    expect(byId.get(TEST_MODEL)!.pricing).toEqual({ input_price_micros_per_mtok: 1_000_000, cached_input_price_micros_per_mtok: 1_000_000, output_price_micros_per_mtok: 2_000_000, max_output_tokens: 64 });
    const claude = await app.admin<Record<string, unknown>>('GET', '/admin/models/claude-sonnet-4-5');
    expect(claude.status).toBe(200);
    expect(claude.body).toMatchObject({ source: 'catalogue', input_price_micros_per_mtok: 3_000_000, cached_input_price_micros_per_mtok: 300_000, output_price_micros_per_mtok: 15_000_000, catalogue: { version: expect.any(Number), source_url: expect.stringMatching(/^https:\/\//) } });
    expect((await app.admin<Record<string, unknown>>('GET', `/admin/models/${TEST_MODEL}`)).body).toMatchObject({ source: 'operator', catalogue: null });

    // And a catalogue model bills at once, at its catalogue price.
    const messages = [{ role: 'user' as const, content: 'hello claude [mock:tokens=3]' }];
    const res = await chat(app, t.key, { model: 'claude-sonnet-4-5', messages });
    expect(res.status).toBe(200);
    const entry = await row(t.tenantId, res.headers.get('x-request-id')!);
    const prompt = countPromptTokens(messages, 'claude-sonnet-4-5');
    expect(Number(entry.amount_micros)).toBe(Math.ceil((prompt * 3_000_000 + 3 * 15_000_000) / 1_000_000));
  });
});

describe('every answer in the OpenAI shape (issue 11, item 5)', () => {
  const calls: Array<[string, string, boolean]> = [
    ['GET', '/v1/nope', false],
    ['POST', '/v1/chat/completion', false],
    ['GET', '/v1/chat/completions', false],
    ['DELETE', '/v1/models', false],
    ['GET', '/admin/nope', true],
    ['DELETE', '/admin/models/gpt-4o', true],
    ['GET', '/nowhere?secret=1', false],
  ];

  it.each(calls)('%s %s -> a JSON 404 with message, type and code', async (method, route, asAdmin) => {
    const t = asAdmin ? undefined : await app.tenant();
    const res = await fetch(`${app.url}${route}`, {
      method,
      headers: { authorization: `Bearer ${asAdmin ? ADMIN_TOKEN : t!.key}`, 'content-type': 'application/json' },
      body: method === 'POST' ? '{}' : undefined,
    });
    expect(res.status).toBe(404);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(res.headers.get('x-request-id')).toMatch(/^req_/);
    const body = (await res.json()) as { error: Record<string, unknown> };
    expect(body).toEqual({ error: { message: `Invalid URL (${method} ${route.split('?')[0]})`, type: 'invalid_request_error', code: 'not_found' } });
  });

  it('an unknown /admin path without the admin token is a 401 in the same shape (nothing about the routes is told)', async () => {
    const res = await fetch(`${app.url}/admin/nope`);
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('invalid_api_key');
  });
});
