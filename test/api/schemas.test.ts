/**
 * The schemas of every body and query at the HTTP edge: the OpenAI request the
 * gateway accepts (src/openai/chat-request.ts) and the admin bodies (src/api/schemas.ts).
 */
import {
  createApiKeyBodySchema,
  createTenantBodySchema,
  modelPriceBodySchema,
  topUpBodySchema,
  transactionsQuerySchema,
} from '../../src/api/schemas';
import { countPromptTokens } from '../../src/billing/token-count';
import { chatCompletionRequestSchema, requestedMaxTokens } from '../../src/openai/chat-request';

const user = { role: 'user', content: 'hi' };

/** The path of the first issue, or 'ok' when the value parses. */
function firstIssuePath(result: { success: true } | { success: false; error: { issues: Array<{ path: Array<string | number> }> } }): string {
  if (result.success) return 'ok';
  return result.error.issues[0]!.path.join('.');
}

describe('chatCompletionRequestSchema (bad input gets a 400)', () => {
  it('accepts a minimal request and passes unknown OpenAI fields through', () => {
    const parsed = chatCompletionRequestSchema.parse({ model: 'gpt-4o', messages: [user], temperature: 0.2, tools: [] });
    expect(parsed).toEqual({ model: 'gpt-4o', messages: [user], temperature: 0.2, tools: [] });
  });

  it('accepts streaming options, both max token fields, parts and every role', () => {
    const request = {
      model: 'gpt-4o',
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 10,
      max_completion_tokens: 20,
      messages: [
        { role: 'system', content: 's' },
        { role: 'developer', content: 'd' },
        { role: 'user', name: 'bob', content: [{ type: 'text', text: 'look' }, { type: 'image_url', image_url: { url: 'https://x/y.png' } }] },
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: '{}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: 'result' },
      ],
    };
    const parsed = chatCompletionRequestSchema.parse(request);
    expect(parsed).toEqual(request);
    expect(requestedMaxTokens(parsed)).toBe(20);
    expect(requestedMaxTokens({ max_tokens: 10 })).toBe(10);
    expect(requestedMaxTokens({ max_tokens: null, max_completion_tokens: null })).toBeUndefined();
  });

  it.each([
    ['n = 0', { model: 'm', messages: [user], n: 0 }, 'n'],
    ['n past 128', { model: 'm', messages: [user], n: 129 }, 'n'],
    ['a string n', { model: 'm', messages: [user], n: '2' }, 'n'],
    ['a fractional n', { model: 'm', messages: [user], n: 1.5 }, 'n'],
    ['tools as an object', { model: 'm', messages: [user], tools: { type: 'function' } }, 'tools'],
    ['a function tool without its function', { model: 'm', messages: [user], tools: [{ type: 'function' }] }, 'tools.0.function'],
    ['a function without a name', { model: 'm', messages: [user], tools: [{ type: 'function', function: { parameters: {} } }] }, 'tools.0.function.name'],
    ['parameters that are no object', { model: 'm', messages: [user], tools: [{ type: 'function', function: { name: 'f', parameters: 'x' } }] }, 'tools.0.function.parameters'],
    ['functions as a string', { model: 'm', messages: [user], functions: 'f' }, 'functions'],
    ['an unknown response format', { model: 'm', messages: [user], response_format: { type: 'xml' } }, 'response_format.type'],
    ['a json_schema format without its schema', { model: 'm', messages: [user], response_format: { type: 'json_schema' } }, 'response_format.json_schema'],
    ['a response format as a string', { model: 'm', messages: [user], response_format: 'json' }, 'response_format'],
    ['an unknown tool_choice', { model: 'm', messages: [user], tool_choice: 'always' }, 'tool_choice'],
  ])('issue 11: refuses %s', (_label, body, path) => {
    expect(firstIssuePath(chatCompletionRequestSchema.safeParse(body))).toBe(path);
  });

  it('issue 11: accepts n, tools, functions, tool_choice and response formats as OpenAI documents them', () => {
    const request = {
      model: 'm',
      messages: [user],
      n: 3,
      tools: [{ type: 'function', function: { name: 'f', description: 'd', parameters: { type: 'object', properties: {} }, strict: true } }, { type: 'custom', custom: { name: 'c' } }],
      functions: [{ name: 'g' }],
      tool_choice: { type: 'function', function: { name: 'f' } },
      response_format: { type: 'json_schema', json_schema: { name: 'out', schema: { type: 'object' }, strict: true } },
    };
    expect(chatCompletionRequestSchema.parse(request)).toEqual(request);
    expect(firstIssuePath(chatCompletionRequestSchema.safeParse({ model: 'm', messages: [user], n: null, tools: null, response_format: { type: 'json_object' }, tool_choice: 'required' }))).toBe('ok');
  });

  it.each([
    ['a missing model', { messages: [user] }, 'model'],
    ['an empty model', { model: '', messages: [user] }, 'model'],
    ['a numeric model', { model: 4, messages: [user] }, 'model'],
    ['missing messages', { model: 'm' }, 'messages'],
    ['empty messages', { model: 'm', messages: [] }, 'messages'],
    ['an unknown role', { model: 'm', messages: [{ role: 'robot', content: 'x' }] }, 'messages.0.role'],
    ['a user message without content', { model: 'm', messages: [{ role: 'user' }] }, 'messages.0.content'],
    ['numeric content', { model: 'm', messages: [{ role: 'user', content: 5 }] }, 'messages.0.content'],
    ['a text part without text', { model: 'm', messages: [{ role: 'user', content: [{ type: 'text' }] }] }, 'messages.0.content.0.text'],
    ['a string stream flag', { model: 'm', messages: [user], stream: 'true' }, 'stream'],
    ['a non-boolean include_usage', { model: 'm', messages: [user], stream_options: { include_usage: 1 } }, 'stream_options.include_usage'],
    ['max_tokens = 0', { model: 'm', messages: [user], max_tokens: 0 }, 'max_tokens'],
    ['a float max_tokens', { model: 'm', messages: [user], max_tokens: 1.5 }, 'max_tokens'],
    ['a string max_completion_tokens', { model: 'm', messages: [user], max_completion_tokens: '10' }, 'max_completion_tokens'],
    ['a body that is an array', [user], ''],
  ])('rejects %s at %s', (_label, body, path) => {
    expect(firstIssuePath(chatCompletionRequestSchema.safeParse(body))).toBe(path);
  });

  it('yields messages that countPromptTokens accepts as they are (admission estimate)', () => {
    const parsed = chatCompletionRequestSchema.parse({
      model: 'gpt-4',
      messages: [{ role: 'user', name: 'bob', content: [{ type: 'text', text: 'hello world' }] }],
    });
    // 3 + "user" 1 + "hello world" 2 + "bob" 1 + 1 + 3 priming
    expect(countPromptTokens(parsed.messages, parsed.model)).toBe(11);
  });

  it('lets an assistant message omit content', () => {
    expect(firstIssuePath(chatCompletionRequestSchema.safeParse({ model: 'm', messages: [user, { role: 'assistant' }] }))).toBe('ok');
  });
});

describe('createTenantBodySchema', () => {
  const valid = { id: 'acme_Corp-1', name: 'Acme', quota_limit_micros: 0 };

  it('accepts a valid tenant, including a zero and a MAX_SAFE_INTEGER quota', () => {
    expect(createTenantBodySchema.parse(valid)).toEqual(valid);
    expect(createTenantBodySchema.parse({ ...valid, quota_limit_micros: Number.MAX_SAFE_INTEGER }).quota_limit_micros).toBe(
      Number.MAX_SAFE_INTEGER,
    );
  });

  it.each([
    ['an id with a space', { ...valid, id: 'acme corp' }, 'id'],
    ['an id with a brace (would break hash tags)', { ...valid, id: '{acme}' }, 'id'],
    ['a 65-character id', { ...valid, id: 'a'.repeat(65) }, 'id'],
    ['an empty name', { ...valid, name: '' }, 'name'],
    ['a 201-character name', { ...valid, name: 'n'.repeat(201) }, 'name'],
    ['a string quota', { ...valid, quota_limit_micros: '10' }, 'quota_limit_micros'],
    ['a float quota', { ...valid, quota_limit_micros: 10.5 }, 'quota_limit_micros'],
    ['a negative quota', { ...valid, quota_limit_micros: -1 }, 'quota_limit_micros'],
    ['an unsafe quota', { ...valid, quota_limit_micros: 2 ** 53 }, 'quota_limit_micros'],
    ['an unknown key', { ...valid, quota_limit: 5 }, ''],
  ])('rejects %s', (_label, body, path) => {
    expect(firstIssuePath(createTenantBodySchema.safeParse(body))).toBe(path);
  });
});

describe('topUpBodySchema', () => {
  it('accepts a positive amount with a reference', () => {
    expect(topUpBodySchema.parse({ amount_micros: 1, reference: 'inv-1' })).toEqual({ amount_micros: 1, reference: 'inv-1' });
  });

  it.each([
    ['a zero amount', { amount_micros: 0, reference: 'r' }, 'amount_micros'],
    ['a negative amount', { amount_micros: -100, reference: 'r' }, 'amount_micros'],
    ['a string amount', { amount_micros: '100', reference: 'r' }, 'amount_micros'],
    ['a float amount', { amount_micros: 0.5, reference: 'r' }, 'amount_micros'],
    ['a missing reference', { amount_micros: 100 }, 'reference'],
    ['an empty reference', { amount_micros: 100, reference: '' }, 'reference'],
  ])('rejects %s', (_label, body, path) => {
    expect(firstIssuePath(topUpBodySchema.safeParse(body))).toBe(path);
  });
});

describe('createApiKeyBodySchema', () => {
  it.each([
    [{ name: 'ci' }],
    [{ name: 'ci', budget_micros: null }],
    [{ name: 'ci', budget_micros: 0 }],
    [{ name: 'ci', budget_micros: 5_000_000 }],
  ])('accepts %j', (body) => {
    expect(createApiKeyBodySchema.parse(body)).toEqual(body);
  });

  it.each([
    ['a missing name', { budget_micros: 5 }, 'name'],
    ['a negative budget', { name: 'ci', budget_micros: -5 }, 'budget_micros'],
    ['a string budget', { name: 'ci', budget_micros: '5' }, 'budget_micros'],
    ['a float budget', { name: 'ci', budget_micros: 5.5 }, 'budget_micros'],
  ])('rejects %s', (_label, body, path) => {
    expect(firstIssuePath(createApiKeyBodySchema.safeParse(body))).toBe(path);
  });
});

describe('modelPriceBodySchema', () => {
  const valid = { input_price_micros_per_mtok: 150_000, output_price_micros_per_mtok: 0, max_output_tokens: 16_384 };

  it('accepts integer prices, including a free side', () => {
    expect(modelPriceBodySchema.parse(valid)).toEqual(valid);
  });

  it.each([
    ['a float price', { ...valid, input_price_micros_per_mtok: 0.15 }, 'input_price_micros_per_mtok'],
    ['a negative price', { ...valid, output_price_micros_per_mtok: -1 }, 'output_price_micros_per_mtok'],
    ['a string price', { ...valid, output_price_micros_per_mtok: '1' }, 'output_price_micros_per_mtok'],
    ['max_output_tokens = 0', { ...valid, max_output_tokens: 0 }, 'max_output_tokens'],
    ['a missing max_output_tokens', { input_price_micros_per_mtok: 1, output_price_micros_per_mtok: 1 }, 'max_output_tokens'],
  ])('rejects %s', (_label, body, path) => {
    expect(firstIssuePath(modelPriceBodySchema.safeParse(body))).toBe(path);
  });
});

describe('transactionsQuerySchema', () => {
  it('defaults limit to 50 and parses decimal strings', () => {
    expect(transactionsQuerySchema.parse({})).toEqual({ limit: 50 });
    expect(transactionsQuerySchema.parse({ limit: '1', cursor: 'abc' })).toEqual({ limit: 1, cursor: 'abc' });
    expect(transactionsQuerySchema.parse({ limit: '500' })).toEqual({ limit: 500 });
  });

  it.each([
    ['limit=0', { limit: '0' }],
    ['limit=501', { limit: '501' }],
    ['limit=-1', { limit: '-1' }],
    ['limit=1e2', { limit: '1e2' }],
    ['limit=5.0', { limit: '5.0' }],
    ['limit=abc', { limit: 'abc' }],
    ['a repeated limit', { limit: ['1', '2'] }],
    ['an empty cursor', { cursor: '' }],
  ])('rejects %s', (_label, query) => {
    expect(transactionsQuerySchema.safeParse(query).success).toBe(false);
  });
});
