/**
 * The Responses API and embeddings as billing reads them (issue 11): the usage mapping into
 * the chat-completions shape (token classes kept), the stream events the accumulator sees,
 * the output text of a JSON answer, the prompt estimate (the chat formula on the input read
 * as messages), the embeddings input count, and what the request schemas refuse.
 */
import { get_encoding } from 'tiktoken';
import { StreamTokenAccumulator } from '../../src/billing/stream-token-accumulator';
import { addEmbeddingsResponse, addResponsesEvent, addResponsesResponse } from '../../src/billing/operation-usage';
import { countPromptTokens } from '../../src/billing/token-count';
import { WORST_CASE_IMAGE_TOKENS } from '../../src/billing/image-tokens';
import { countEmbeddingInputTokens, embeddingsRequestSchema } from '../../src/openai/embeddings';
import { countResponsesInputTokens, responseOutputTexts, responsesEventAsChunk, responsesRequestSchema } from '../../src/openai/responses';
import { responsesUsageAsChatUsage } from '../../src/openai/responses-usage';

const o200k = get_encoding('o200k_base');
const cl100k = get_encoding('cl100k_base');
afterAll(() => {
  o200k.free();
  cl100k.free();
});

describe('responsesUsageAsChatUsage', () => {
  it('maps input/output tokens and keeps the cached and reasoning classes', () => {
    expect(responsesUsageAsChatUsage({
      input_tokens: 1200,
      input_tokens_details: { cached_tokens: 1024 },
      output_tokens: 300,
      output_tokens_details: { reasoning_tokens: 256 },
      total_tokens: 1500,
    })).toEqual({
      prompt_tokens: 1200,
      completion_tokens: 300,
      total_tokens: 1500,
      prompt_tokens_details: { cached_tokens: 1024 },
      completion_tokens_details: { reasoning_tokens: 256 },
    });
    expect(responsesUsageAsChatUsage({ input_tokens: 5, output_tokens: 0 })).toEqual({ prompt_tokens: 5, completion_tokens: 0, total_tokens: 5 });
  });

  it.each([
    ['null', null],
    ['no output_tokens', { input_tokens: 3 }],
    ['negative tokens', { input_tokens: -1, output_tokens: 2 }],
    ['fractional tokens', { input_tokens: 1.5, output_tokens: 2 }],
    ['tokens as strings', { input_tokens: '3', output_tokens: '2' }],
  ])('is undefined for a malformed usage (%s): billing counts the text instead', (_name, usage) => {
    expect(responsesUsageAsChatUsage(usage)).toBeUndefined();
  });
});

describe('what the accumulator sees', () => {
  const acc = (): StreamTokenAccumulator => new StreamTokenAccumulator({ model: 'gpt-4o-mini', promptTokens: 11 });

  it('bills a completed stream from response.completed, with its detail classes in the chat shape', () => {
    const a = acc();
    addResponsesEvent(a, { type: 'response.output_text.delta', delta: 'hello there' });
    addResponsesEvent(a, { type: 'response.completed', response: { usage: { input_tokens: 40, output_tokens: 9, output_tokens_details: { reasoning_tokens: 7 } } } });
    expect(a.finalize({ promptTokens: 11, completionTokens: 64 })).toEqual({ promptTokens: 40, completionTokens: 9, source: 'upstream' });
    expect(responsesEventAsChunk({ type: 'response.completed', response: { usage: { input_tokens: 40, output_tokens: 9, output_tokens_details: { reasoning_tokens: 7 } } } }))
      .toEqual({ choices: [], usage: { prompt_tokens: 40, completion_tokens: 9, total_tokens: 49, completion_tokens_details: { reasoning_tokens: 7 } } });
  });

  it('counts the delivered deltas (text, refusal, reasoning summary, function calls) with tiktoken when no usage arrived', () => {
    const a = acc();
    const deltas = [
      { type: 'response.output_text.delta', delta: 'The ledger ' },
      { type: 'response.output_text.delta', delta: 'balances.' },
      { type: 'response.refusal.delta', delta: ' No.' },
      { type: 'response.reasoning_summary_text.delta', delta: 'Thinking about money' },
      { type: 'response.output_item.added', output_index: 1, item: { type: 'function_call', name: 'lookup_balance' } },
      { type: 'response.function_call_arguments.delta', output_index: 1, delta: '{"tenant":"t1"}' },
      { type: 'response.created', response: { usage: null } },
      { type: 'response.in_progress' },
    ];
    for (const event of deltas) addResponsesEvent(a, event);
    const expected = o200k.encode('The ledger balances. No.Thinking about money').length + o200k.encode('lookup_balance').length + o200k.encode('{"tenant":"t1"}').length;
    expect(a.finalize({ promptTokens: 11, completionTokens: 64 })).toEqual({ promptTokens: 11, completionTokens: expected, source: 'tiktoken' });
  });

  it('reads a JSON Response: its output texts, and its usage', () => {
    const response = {
      output: [
        { type: 'reasoning', summary: [{ type: 'summary_text', text: 'plan' }] },
        { type: 'message', content: [{ type: 'output_text', text: 'Answer.' }, { type: 'refusal', refusal: 'Not that.' }] },
        { type: 'function_call', name: 'f', arguments: '{}' },
        { type: 'web_search_call', id: 'ws_1' },
      ],
      usage: { input_tokens: 21, output_tokens: 8 },
    };
    expect(responseOutputTexts(response)).toEqual(['plan', 'Answer.', 'Not that.', 'f', '{}']);
    const a = acc();
    addResponsesResponse(a, response);
    expect(a.finalize({ promptTokens: 11, completionTokens: 64 })).toEqual({ promptTokens: 21, completionTokens: 8, source: 'upstream' });
    const withoutUsage = acc();
    addResponsesResponse(withoutUsage, { ...response, usage: null });
    expect(withoutUsage.finalize({ promptTokens: 11, completionTokens: 64 }).source).toBe('tiktoken');
  });

  it('bills an embeddings answer its input tokens and no output', () => {
    const a = acc();
    addEmbeddingsResponse(a, { object: 'list', data: [], usage: { prompt_tokens: 17, total_tokens: 17 } });
    expect(a.finalize({ promptTokens: 11, completionTokens: 0 })).toEqual({ promptTokens: 17, completionTokens: 0, source: 'upstream' });
    const none = acc();
    addEmbeddingsResponse(none, { object: 'list', data: [] });
    expect(none.finalize({ promptTokens: 11, completionTokens: 0 })).toEqual({ promptTokens: 11, completionTokens: 0, source: 'tiktoken' });
  });
});

describe('the prompt estimate', () => {
  it('is the chat formula on the input read as messages: instructions, a string input, items, tools', () => {
    const model = 'gpt-4o-mini';
    expect(countResponsesInputTokens({ model, input: 'What is a ledger?', instructions: 'Be brief.' }))
      .toBe(countPromptTokens([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'What is a ledger?' }], model));
    // 3 priming + per message 3 + role + text, counted here by hand.
    const t = (s: string): number => o200k.encode(s).length;
    expect(countResponsesInputTokens({ model, input: 'hi' })).toBe(3 + 3 + t('user') + t('hi'));
    const tools = [{ type: 'function', name: 'lookup', parameters: { type: 'object' } }];
    expect(countResponsesInputTokens({
      model,
      tools,
      input: [
        { role: 'user', content: [{ type: 'input_text', text: 'Look it up' }] },
        { type: 'function_call', call_id: 'c1', name: 'lookup', arguments: '{"q":1}' },
        { type: 'function_call_output', call_id: 'c1', output: '42' },
      ],
    })).toBe(3
      + (3 + t('system') + t(JSON.stringify(tools)))
      + (3 + t('user') + t('Look it up'))
      + (3 + t('assistant') + t('lookup') + t('{"q":1}'))
      + (3 + t('tool') + t('42') + t('c1')));
  });

  it('counts an image by URL at the configured worst case, an image by file id too, a file at the media-part rate', () => {
    const model = 'gpt-4o-mini';
    const base = countResponsesInputTokens({ model, input: [{ role: 'user', content: [{ type: 'input_text', text: 'see' }] }] });
    const withImage = countResponsesInputTokens({ model, input: [{ role: 'user', content: [{ type: 'input_text', text: 'see' }, { type: 'input_image', image_url: 'https://example.test/cat.png', detail: 'auto' }] }] });
    expect(withImage - base).toBe(WORST_CASE_IMAGE_TOKENS);
    const byFileId = countResponsesInputTokens({ model, input: [{ role: 'user', content: [{ type: 'input_text', text: 'see' }, { type: 'input_image', file_id: 'file_1' }] }] }, { imageWorstCaseTokens: 2000 });
    expect(byFileId - base).toBe(2000);
    const low = countResponsesInputTokens({ model, input: [{ role: 'user', content: [{ type: 'input_text', text: 'see' }, { type: 'input_image', image_url: 'https://example.test/cat.png', detail: 'low' }] }] });
    expect(low - base).toBe(85);
  });

  it('counts embeddings inputs: text by tiktoken (the model encoding), token arrays by length', () => {
    expect(countEmbeddingInputTokens('ledger balance', 'text-embedding-3-small')).toBe(cl100k.encode('ledger balance').length);
    expect(countEmbeddingInputTokens(['a b', 'c'], 'text-embedding-3-small')).toBe(cl100k.encode('a b').length + cl100k.encode('c').length);
    expect(countEmbeddingInputTokens([5, 6, 7], 'text-embedding-3-small')).toBe(3);
    expect(countEmbeddingInputTokens([[5, 6], [7]], 'text-embedding-3-small')).toBe(3);
  });
});

describe('the request schemas', () => {
  it('accept what OpenAI documents', () => {
    expect(embeddingsRequestSchema.safeParse({ model: 'e', input: 'x', dimensions: 256, encoding_format: 'base64', user: 'u' }).success).toBe(true);
    expect(responsesRequestSchema.safeParse({
      model: 'm',
      instructions: null,
      max_output_tokens: 100,
      stream: true,
      tools: [{ type: 'web_search' }],
      input: [
        { role: 'developer', content: 'Be brief.' },
        { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'hi' }, { type: 'input_image', image_url: 'data:image/png;base64,AAAA' }] },
        { type: 'item_reference', id: 'msg_1' },
      ],
      store: false,
      metadata: { a: 'b' },
    }).success).toBe(true);
  });

  it.each([
    ['an empty message content array', { model: 'm', input: [{ role: 'user', content: [] }] }],
    ['an output_text part without text', { model: 'm', input: [{ role: 'assistant', content: [{ type: 'output_text' }] }] }],
    ['a message item of an unknown role', { model: 'm', input: [{ type: 'message', role: 'tool', content: 'x' }] }],
    ['an item that is not an object', { model: 'm', input: ['hello'] }],
    ['a tool without a type', { model: 'm', input: 'x', tools: [{ name: 'f' }] }],
  ])('responses: refuse %s', (_name, body) => {
    expect(responsesRequestSchema.safeParse(body).success).toBe(false);
  });
});
