/**
 * The price list: `PUT /admin/models/:model` and `GET /admin/models[/:model]` (admin) and
 * `GET /v1/models` (API key), exact integer prices (input, cached input, output), upsert
 * semantics, the operator's price as source, bad input that stores nothing.
 */
import { uniqueId } from '../helpers/services';
import { ADMIN_TOKEN, ADMIN_UNAUTHORIZED, createKey, createTenant, startAdminHarness, type AdminHarness } from './admin-harness';

let h: AdminHarness;

beforeAll(async () => {
  h = await startAdminHarness();
});

afterAll(async () => {
  await h.close();
});

interface PriceRow {
  model: string;
  input_price_micros_per_mtok: string;
  output_price_micros_per_mtok: string;
  max_output_tokens: number;
  cached_input_price_micros_per_mtok: string | null;
  source: string;
  catalogue_version: number | null;
  created_at: Date;
}

async function priceRow(model: string): Promise<PriceRow | undefined> {
  return h.db<PriceRow>('model_price').where({ model }).first();
}

const PRICE = { input_price_micros_per_mtok: 2_500_000, output_price_micros_per_mtok: 10_000_000, max_output_tokens: 16_384 };

/** The view of an operator's price: the cached-input price is the input price unless set. */
const operatorView = (model: string, price: typeof PRICE & { cached_input_price_micros_per_mtok?: number }) => ({
  model,
  cached_input_price_micros_per_mtok: price.input_price_micros_per_mtok,
  ...price,
  source: 'operator',
  catalogue: null,
  updated_at: expect.any(String),
});

describe('PUT /admin/models/:model', () => {
  it('stores a price and answers it in snake_case', async () => {
    const model = uniqueId('gpt-test');
    const res = await h.admin('PUT', `/admin/models/${model}`, PRICE);

    expect(res.status).toBe(200);
    expect(res.body).toEqual(operatorView(model, PRICE));
    expect(await priceRow(model)).toMatchObject({
      model,
      input_price_micros_per_mtok: '2500000',
      output_price_micros_per_mtok: '10000000',
      max_output_tokens: 16_384,
    });
  });

  it('replaces an existing price and keeps its creation time', async () => {
    const model = uniqueId('gpt-test');
    await h.admin('PUT', `/admin/models/${model}`, PRICE);
    const before = await priceRow(model);
    const changed = { input_price_micros_per_mtok: 0, output_price_micros_per_mtok: Number.MAX_SAFE_INTEGER, max_output_tokens: 1 };

    const res = await h.admin('PUT', `/admin/models/${model}`, changed);

    expect(res.status).toBe(200);
    expect(res.body).toEqual(operatorView(model, changed));
    const after = await priceRow(model);
    expect(after).toMatchObject({ input_price_micros_per_mtok: '0', output_price_micros_per_mtok: '9007199254740991', max_output_tokens: 1 });
    expect(after!.created_at).toEqual(before!.created_at);
    expect(await h.db('model_price').where({ model }).count({ n: '*' })).toEqual([{ n: '1' }]);
  });

  it('issue 11: stores a cached-input price, shows it in GET /admin/models/:model and the list', async () => {
    const model = uniqueId('gpt-cached');
    const priced = { ...PRICE, cached_input_price_micros_per_mtok: 1_250_000 };
    const res = await h.admin('PUT', `/admin/models/${model}`, priced);

    expect(res.status).toBe(200);
    expect(res.body).toEqual(operatorView(model, priced));
    expect(await priceRow(model)).toMatchObject({ cached_input_price_micros_per_mtok: '1250000', source: 'operator', catalogue_version: null });
    expect((await h.admin('GET', `/admin/models/${model}`)).body).toEqual(operatorView(model, priced));
    const list = await h.admin('GET', '/admin/models');
    expect(list.status).toBe(200);
    expect(list.body.data).toContainEqual(operatorView(model, priced));
    // Replaced without it: back to the input price.
    await h.admin('PUT', `/admin/models/${model}`, PRICE);
    expect((await h.admin('GET', `/admin/models/${model}`)).body.cached_input_price_micros_per_mtok).toBe(PRICE.input_price_micros_per_mtok);
    expect((await priceRow(model))!).toMatchObject({ cached_input_price_micros_per_mtok: null });
  });

  it('GET /admin/models/:model of an unpriced model -> 404', async () => {
    const res = await h.admin('GET', `/admin/models/${uniqueId('nope')}`);
    expect(res.status).toBe(404);
    expect(res.body.error.code).toBe('not_found');
  });

  it('accepts a model name with a slash (URL-encoded)', async () => {
    const model = `${uniqueId('meta')}/llama-3`;
    const res = await h.admin('PUT', `/admin/models/${encodeURIComponent(model)}`, PRICE);

    expect(res.status).toBe(200);
    expect(res.body.model).toBe(model);
    expect(await priceRow(model)).toBeDefined();
  });

  const badBodies: Array<[string, string, string | undefined]> = [
    ['malformed JSON', '{"input_price_micros_per_mtok": 1', undefined],
    ['a string price', JSON.stringify({ ...PRICE, input_price_micros_per_mtok: '2500000' }), 'input_price_micros_per_mtok'],
    ['a negative price', JSON.stringify({ ...PRICE, output_price_micros_per_mtok: -1 }), 'output_price_micros_per_mtok'],
    ['a fractional price', JSON.stringify({ ...PRICE, input_price_micros_per_mtok: 0.25 }), 'input_price_micros_per_mtok'],
    ['a string cached price', JSON.stringify({ ...PRICE, cached_input_price_micros_per_mtok: '1' }), 'cached_input_price_micros_per_mtok'],
    ['a negative cached price', JSON.stringify({ ...PRICE, cached_input_price_micros_per_mtok: -5 }), 'cached_input_price_micros_per_mtok'],
    ['max_output_tokens = 0', JSON.stringify({ ...PRICE, max_output_tokens: 0 }), 'max_output_tokens'],
    ['max_output_tokens past int4', JSON.stringify({ ...PRICE, max_output_tokens: 2_147_483_648 }), 'max_output_tokens'],
    ['a missing field', JSON.stringify({ input_price_micros_per_mtok: 1, output_price_micros_per_mtok: 1 }), 'max_output_tokens'],
    ['an unknown field', JSON.stringify({ ...PRICE, currency: 'usd' }), undefined],
  ];

  it.each(badBodies)('%s -> 400 and nothing stored', async (_label, rawBody, param) => {
    const model = uniqueId('gpt-bad');
    const res = await h.call('PUT', `/admin/models/${model}`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      rawBody,
    });

    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_request_error' });
    expect(res.body.error.param).toBe(param);
    expect(await priceRow(model)).toBeUndefined();
  });

  it('a model name longer than 200 characters -> 400', async () => {
    const model = 'm'.repeat(201);
    const res = await h.admin('PUT', `/admin/models/${model}`, PRICE);

    expect(res.status).toBe(400);
    expect(res.body.error.param).toBe('model');
    expect(await priceRow(model)).toBeUndefined();
  });

  it('without the admin token -> 401 and nothing stored', async () => {
    const model = uniqueId('gpt-denied');
    const res = await h.call('PUT', `/admin/models/${model}`, {
      headers: { authorization: 'Bearer x', 'content-type': 'application/json' },
      rawBody: JSON.stringify(PRICE),
    });

    expect(res.status).toBe(401);
    expect(res.body).toEqual(ADMIN_UNAUTHORIZED);
    expect(await priceRow(model)).toBeUndefined();
  });
});

describe('GET /v1/models', () => {
  it('lists a model priced through the admin route, in the OpenAI list shape', async () => {
    const model = uniqueId('gpt-listed');
    await h.admin('PUT', `/admin/models/${model}`, PRICE);
    const row = await priceRow(model);
    const { key } = await createKey(h, await createTenant(h, 1));

    const res = await h.call('GET', '/v1/models', { headers: { authorization: `Bearer ${key}` } });

    expect(res.status).toBe(200);
    expect(res.body.object).toBe('list');
    expect(res.body.data).toContainEqual({
      id: model,
      object: 'model',
      created: Math.floor(row!.created_at.getTime() / 1000),
      owned_by: 'durable-billing',
      pricing: { input_price_micros_per_mtok: 2_500_000, cached_input_price_micros_per_mtok: 2_500_000, output_price_micros_per_mtok: 10_000_000, max_output_tokens: 16_384 },
    });
    const ids = (res.body.data as Array<{ id: string }>).map((m) => m.id);
    // Sorted by code point (COLLATE "C"), the same on every database locale.
    expect(ids).toEqual([...ids].sort());
  });

  it('needs an API key: none, unknown or revoked -> 401', async () => {
    const tenantId = await createTenant(h, 1);
    const { id, key } = await createKey(h, tenantId);
    await h.admin('DELETE', `/admin/api-keys/${id}`);

    const none = await h.call('GET', '/v1/models');
    const unknown = await h.call('GET', '/v1/models', { headers: { authorization: 'Bearer sk-bq-nope' } });
    const revoked = await h.call('GET', '/v1/models', { headers: { authorization: `Bearer ${key}` } });
    const admin = await h.call('GET', '/v1/models', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });

    for (const res of [none, unknown, revoked, admin]) {
      expect(res.status).toBe(401);
      expect(res.body.error.code).toBe('invalid_api_key');
    }
  });
});
