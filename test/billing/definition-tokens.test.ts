/**
 * Tool, function and response-format definitions in the prompt estimate (issue 11,
 * docs/pricing.md): the estimate counts each definition's JSON plus fixed allowances, and must
 * never fall below what a provider bills for them: the mock upstream's rendering of OpenAI's
 * (src/upstream/mock/definition-prompt.ts) is checked over many shapes.
 */
import { countDefinitionTokens, countTextTokens, RESPONSE_FORMAT_BLOCK_TOKENS, TOKENS_PER_TOOL, TOOLS_BLOCK_TOKENS } from '../../src/billing/token-count';
import { chatCompletionRequestSchema } from '../../src/openai/chat-request';
import { definitionPromptTokens } from '../../src/upstream/mock/definition-prompt';

const MODEL = 'gpt-4o-mini';
const messages = [{ role: 'user', content: 'hi' }];

const tool = (name: string, properties: Record<string, unknown>, description?: string) => ({
  type: 'function',
  function: { name, ...(description ? { description } : {}), parameters: { type: 'object', properties, required: Object.keys(properties).slice(0, 1) } },
});

const shapes: Array<[string, Record<string, unknown>]> = [
  ['one tool without parameters', { tools: [{ type: 'function', function: { name: 'ping' } }] }],
  ['a tool with described parameters', { tools: [tool('get_weather', { city: { type: 'string', description: 'The city, e.g. Paris.' }, unit: { type: 'string', enum: ['c', 'f'] } }, 'Gets the weather.')] }],
  ['nested objects and arrays', { tools: [tool('book', { guests: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' }, age: { type: 'integer' } } } }, vip: { type: 'boolean' } }, 'Books a table.')] }],
  ['long descriptions', { tools: [tool('search', { query: { type: 'string', description: 'word '.repeat(400) } }, 'Searches. '.repeat(200))] }],
  ['many tools', { tools: Array.from({ length: 40 }, (_, i) => tool(`fn_${i}`, { a: { type: 'number' } }, `Function number ${i}.`)) }],
  ['deprecated functions', { functions: [{ name: 'lookup', description: 'Looks up.', parameters: { type: 'object', properties: { id: { type: 'string' } } } }] }],
  ['unicode descriptions', { tools: [tool('traduire', { texte: { type: 'string', description: 'Le texte à traduire — 日本語も' } }, 'Traduit un texte. 翻訳します。')] }],
  ['a json schema response format', { response_format: { type: 'json_schema', json_schema: { name: 'answer', description: 'The answer.', schema: { type: 'object', properties: { answer: { type: 'string' }, confidence: { type: 'number' } }, required: ['answer'] } } } }],
  ['tools and a response format', {
    tools: [tool('get_weather', { city: { type: 'string' } })],
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
    response_format: { type: 'json_schema', json_schema: { name: 'w', schema: { type: 'object', properties: { t: { type: 'number' } } } } },
  }],
];

describe('countDefinitionTokens', () => {
  it.each(shapes)('%s: the estimate covers what the provider-like rendering bills', (_label, extra) => {
    const request = chatCompletionRequestSchema.parse({ model: MODEL, messages, ...extra });
    const estimate = countDefinitionTokens(request, MODEL);
    const billed = definitionPromptTokens(request);
    expect(billed).toBeGreaterThan(0);
    expect(estimate).toBeGreaterThanOrEqual(billed);
  });

  it('counts each definition\'s JSON plus the documented allowances', () => {
    const t = tool('f', { x: { type: 'string' } });
    expect(countDefinitionTokens({ tools: [t, t] }, MODEL)).toBe(TOOLS_BLOCK_TOKENS + 2 * (TOKENS_PER_TOOL + countTextTokens(JSON.stringify(t), MODEL)));
    const format = { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'object' } } };
    expect(countDefinitionTokens({ response_format: format }, MODEL)).toBe(RESPONSE_FORMAT_BLOCK_TOKENS + countTextTokens(JSON.stringify(format.json_schema), MODEL));
  });

  it('adds nothing for a request without definitions, an empty tools list, a text or json_object format', () => {
    expect(countDefinitionTokens({}, MODEL)).toBe(0);
    expect(countDefinitionTokens({ tools: [], functions: null, tool_choice: 'auto', response_format: { type: 'json_object' } }, MODEL)).toBe(0);
    expect(countDefinitionTokens({ response_format: { type: 'text' } }, MODEL)).toBe(0);
  });
});
