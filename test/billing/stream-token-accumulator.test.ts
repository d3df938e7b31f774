import type { ChatCompletionChunk } from 'openai/resources/chat/completions';
import { Tiktoken } from 'tiktoken';
import { InvalidBillingQuantityError } from '../../src/billing/pricing';
import { StreamTokenAccumulator, TokenSource, type ChatCompletionChunkLike } from '../../src/billing/stream-token-accumulator';

const messages = [{ role: 'user', content: 'hello world' }];
// countPromptTokens(messages, 'gpt-4') = 3 + 1 + 2 + 3
const PROMPT_TOKENS = 9;
const estimate = { promptTokens: 1_000, completionTokens: 4_000 };

/** A finalized usage without any token class reported (issue 11: the classes are all 0). */
function noClasses<T extends object>(usage: T): T & { cachedPromptTokens: 0; reasoningTokens: 0; audioPromptTokens: 0; audioCompletionTokens: 0 } {
  return { ...usage, cachedPromptTokens: 0, reasoningTokens: 0, audioPromptTokens: 0, audioCompletionTokens: 0 };
}

function contentChunk(content: string, index = 0): ChatCompletionChunkLike {
  return { choices: [{ index, delta: { content } }] };
}

describe('StreamTokenAccumulator (M6)', () => {
  it('M6.3 level 1: upstream usage wins over the accumulated text', () => {
    const acc = new StreamTokenAccumulator({ model: 'gpt-4', messages });
    acc.add(contentChunk('hello'));
    acc.add(contentChunk(' world'));
    acc.add({ choices: [], usage: { prompt_tokens: 12, completion_tokens: 34 } });
    expect(acc.hasUpstreamUsage).toBe(true);
    expect(acc.finalize(estimate)).toEqual(noClasses({ promptTokens: 12, completionTokens: 34, source: TokenSource.upstream }));
  });

  it('issue 11: the final usage chunk\'s token classes are billed, not an earlier running usage\'s', () => {
    const acc = new StreamTokenAccumulator({ model: 'gpt-4', messages });
    // A provider sending running usage (no details) on early chunks, the real figures last (LiteLLM #36168).
    acc.add({ ...contentChunk('hello'), usage: { prompt_tokens: 120, completion_tokens: 1 } });
    acc.add({ ...contentChunk(' world'), usage: { prompt_tokens: 120, completion_tokens: 2 } });
    acc.add({
      choices: [],
      usage: {
        prompt_tokens: 120,
        completion_tokens: 30,
        prompt_tokens_details: { cached_tokens: 100, audio_tokens: 4 },
        completion_tokens_details: { reasoning_tokens: 28, audio_tokens: 0 },
      },
    });
    expect(acc.finalize(estimate)).toEqual({
      promptTokens: 120, completionTokens: 30, cachedPromptTokens: 100, audioPromptTokens: 4, reasoningTokens: 28, audioCompletionTokens: 0, source: 'upstream',
    });
  });

  it('issue 11: a later usage without details replaces an earlier one with details whole', () => {
    const acc = new StreamTokenAccumulator({ model: 'gpt-4', messages });
    acc.add({ choices: [], usage: { prompt_tokens: 50, completion_tokens: 1, prompt_tokens_details: { cached_tokens: 50 } } });
    acc.add({ choices: [], usage: { prompt_tokens: 60, completion_tokens: 5 } });
    expect(acc.finalize(estimate)).toEqual(noClasses({ promptTokens: 60, completionTokens: 5, source: 'upstream' }));
  });

  it('M6.3 level 1: the last valid usage wins when several arrive', () => {
    const acc = new StreamTokenAccumulator({ model: 'gpt-4', messages });
    acc.add({ choices: [], usage: { prompt_tokens: 12, completion_tokens: 1 } });
    acc.add({ choices: [], usage: { prompt_tokens: 12, completion_tokens: 40 } });
    expect(acc.finalize(estimate)).toEqual(noClasses({ promptTokens: 12, completionTokens: 40, source: 'upstream' }));
  });

  it('M6.1/M6.2 level 2: counts accumulated content deltas with tiktoken when no usage arrives', () => {
    const acc = new StreamTokenAccumulator({ model: 'gpt-4', messages });
    acc.add({ choices: [{ index: 0, delta: { role: 'assistant', content: '' } }] });
    acc.add(contentChunk('hello'));
    acc.add(contentChunk(' world'));
    acc.add({ choices: [{ index: 0, delta: {} }] });
    expect(acc.contentText()).toBe('hello world');
    expect(acc.hasUpstreamUsage).toBe(false);
    expect(acc.finalize(estimate)).toEqual(noClasses({ promptTokens: PROMPT_TOKENS, completionTokens: 2, source: TokenSource.tiktoken }));
  });

  it('level 2 with an empty stream: 0 completion tokens, still tiktoken (the client received nothing)', () => {
    const acc = new StreamTokenAccumulator({ model: 'gpt-4', messages });
    expect(acc.finalize(estimate)).toEqual(noClasses({ promptTokens: PROMPT_TOKENS, completionTokens: 0, source: 'tiktoken' }));
  });

  it('level 2 counts tool-call names and arguments streamed in pieces', () => {
    const acc = new StreamTokenAccumulator({ model: 'gpt-4', messages });
    acc.add({ choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { name: 'get_weather', arguments: '' } }] } }] });
    acc.add({ choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] } }] });
    acc.add({ choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: '"Paris"}' } }] } }] });
    // "get_weather" = 2 tokens, '{"city":"Paris"}' = 5 tokens in cl100k_base
    expect(acc.finalize(estimate)).toEqual(noClasses({ promptTokens: PROMPT_TOKENS, completionTokens: 7, source: 'tiktoken' }));
  });

  it('level 2 mixes content, refusal and addText, and sums every choice', () => {
    const acc = new StreamTokenAccumulator({ model: 'gpt-4', messages });
    acc.add(contentChunk('hello'));
    acc.addText(' world');
    acc.add(contentChunk('hello world', 1));
    acc.add({ choices: [{ index: 2, delta: { refusal: 'hello' } }] });
    expect(acc.contentText(0)).toBe('hello world');
    expect(acc.contentText(1)).toBe('hello world');
    expect(acc.contentText(2)).toBe('hello');
    expect(acc.finalize(estimate)).toEqual(noClasses({ promptTokens: PROMPT_TOKENS, completionTokens: 5, source: 'tiktoken' }));
  });

  it('accepts the openai SDK chunk type as is (the wire format of the upstream)', () => {
    const base = { id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'gpt-4' } as const;
    const chunks: ChatCompletionChunk[] = [
      { ...base, choices: [{ index: 0, delta: { role: 'assistant', content: 'hello' }, finish_reason: null }] },
      { ...base, choices: [{ index: 0, delta: { content: ' world' }, finish_reason: 'stop' }] },
      { ...base, choices: [], usage: { prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 } },
    ];
    const acc = new StreamTokenAccumulator({ model: 'gpt-4', messages });
    for (const chunk of chunks) acc.add(chunk);
    expect(acc.contentText()).toBe('hello world');
    expect(acc.finalize(estimate)).toEqual(noClasses({ promptTokens: 9, completionTokens: 2, source: 'upstream' }));
  });

  it('ignores a malformed usage object and falls back to tiktoken', () => {
    const acc = new StreamTokenAccumulator({ model: 'gpt-4', messages });
    acc.add(contentChunk('hello world'));
    acc.add({ choices: [], usage: { prompt_tokens: '12', completion_tokens: 3 } });
    acc.add({ choices: [], usage: { prompt_tokens: 12, completion_tokens: -1 } });
    acc.add({ choices: [], usage: { prompt_tokens: 12 } });
    acc.add({ choices: [], usage: null });
    expect(acc.hasUpstreamUsage).toBe(false);
    expect(acc.finalize(estimate).source).toBe(TokenSource.tiktoken);
  });

  it('M6.3 level 3: the estimate when constructed with textUnavailable', () => {
    const acc = new StreamTokenAccumulator({ model: 'gpt-4', promptTokens: 9, textUnavailable: true });
    acc.add(contentChunk('hello world'));
    expect(acc.finalize(estimate)).toEqual(noClasses({ promptTokens: 1_000, completionTokens: 4_000, source: TokenSource.estimate }));
  });

  it('level 3 after markTextUnavailable(), but upstream usage still beats it', () => {
    const acc = new StreamTokenAccumulator({ model: 'gpt-4', messages });
    acc.add(contentChunk('hello world'));
    acc.markTextUnavailable();
    expect(acc.finalize(estimate)).toEqual(noClasses({ ...estimate, source: 'estimate' }));
    acc.add({ choices: [], usage: { prompt_tokens: 9, completion_tokens: 2 } });
    expect(acc.finalize(estimate)).toEqual(noClasses({ promptTokens: 9, completionTokens: 2, source: 'upstream' }));
  });

  it('level 3 when tiktoken throws while counting the prompt', () => {
    // A role that is not a string makes the tokenizer throw; the accumulator must not.
    const broken = [{ role: 42 as unknown as string, content: 'hello' }];
    const acc = new StreamTokenAccumulator({ model: 'gpt-4', messages: broken });
    acc.add(contentChunk('hello world'));
    expect(acc.finalize(estimate)).toEqual(noClasses({ ...estimate, source: 'estimate' }));
  });

  it('accepts prompt tokens counted earlier instead of messages', () => {
    const acc = new StreamTokenAccumulator({ model: 'gpt-4o', promptTokens: 321 });
    acc.addText('hello world');
    expect(acc.finalize(estimate)).toEqual(noClasses({ promptTokens: 321, completionTokens: 2, source: 'tiktoken' }));
    expect(() => new StreamTokenAccumulator({ model: 'gpt-4o', promptTokens: -1 })).toThrow(InvalidBillingQuantityError);
  });

  it('rejects an estimate that is not a non-negative safe integer', () => {
    const acc = new StreamTokenAccumulator({ model: 'gpt-4', messages });
    expect(() => acc.finalize({ promptTokens: 1.5, completionTokens: 0 })).toThrow(InvalidBillingQuantityError);
    expect(() => acc.finalize({ promptTokens: 0, completionTokens: -3 })).toThrow(InvalidBillingQuantityError);
  });
});

describe('StreamTokenAccumulator when tiktoken fails at finalize (M6.3 level 3)', () => {
  afterEach(() => {
    jest.restoreAllMocks();
  });

  it('falls back to the estimate when counting the completion throws', () => {
    const acc = new StreamTokenAccumulator({ model: 'gpt-4', messages });
    acc.add(contentChunk('hello world'));
    // Make the real tiktoken encoder fail, as a WASM trap would.
    const spy = jest.spyOn(Tiktoken.prototype, 'encode_ordinary').mockImplementation(() => {
      throw new Error('wasm trap');
    });
    expect(acc.finalize(estimate)).toEqual(noClasses({ ...estimate, source: 'estimate' }));
    expect(spy).toHaveBeenCalledTimes(1);
    spy.mockRestore();
    expect(acc.finalize(estimate)).toEqual(noClasses({ promptTokens: PROMPT_TOKENS, completionTokens: 2, source: 'tiktoken' }));
  });
});
