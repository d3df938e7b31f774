/**
 * Normalising what upstreams send (usage to OpenAI's shape inside the adapter,
 * M6.3 level 1 must only trust sane usage) and OpenAI error bodies.
 */
import { UpstreamProtocolError, UpstreamStreamError } from '../../src/upstream/errors';
import {
  normaliseUsage,
  parseChatCompletion,
  parseChatCompletionChunk,
  parseErrorBody,
} from '../../src/openai/wire';

describe('normaliseUsage', () => {
  it('keeps OpenAI usage and its details', () => {
    expect(
      normaliseUsage({ prompt_tokens: 10, completion_tokens: 5, total_tokens: 15, prompt_tokens_details: { cached_tokens: 4 } }),
    ).toEqual({ prompt_tokens: 10, completion_tokens: 5, total_tokens: 15, prompt_tokens_details: { cached_tokens: 4 } });
  });

  it('maps input/output token names and fills a missing total', () => {
    expect(normaliseUsage({ input_tokens: 7, output_tokens: 2 })).toEqual({
      prompt_tokens: 7,
      completion_tokens: 2,
      total_tokens: 9,
    });
  });

  it('issue 11: maps the Responses API\'s input/output token details to the chat-completions details', () => {
    expect(normaliseUsage({ input_tokens: 70, output_tokens: 20, input_tokens_details: { cached_tokens: 64 }, output_tokens_details: { reasoning_tokens: 12 } })).toEqual({
      prompt_tokens: 70,
      completion_tokens: 20,
      total_tokens: 90,
      prompt_tokens_details: { cached_tokens: 64 },
      completion_tokens_details: { reasoning_tokens: 12 },
    });
  });

  it('refuses usage it cannot trust, so billing falls back to counting', () => {
    expect(normaliseUsage(null)).toBeUndefined();
    expect(normaliseUsage({ prompt_tokens: 3 })).toBeUndefined();
    expect(normaliseUsage({ prompt_tokens: -1, completion_tokens: 2 })).toBeUndefined();
    expect(normaliseUsage({ prompt_tokens: 1.5, completion_tokens: 2 })).toBeUndefined();
    expect(normaliseUsage({ prompt_tokens: '3', completion_tokens: 2 })).toBeUndefined();
  });
});

describe('parseChatCompletion / parseChatCompletionChunk', () => {
  it('folds unknown finish reasons into stop and keeps unknown fields', () => {
    const chunk = parseChatCompletionChunk(
      JSON.stringify({ id: 'c', created: 1, model: 'm', choices: [{ index: 0, delta: { content: 'x' }, finish_reason: 'eos', extra: 1 }] }),
    );
    expect(chunk.choices[0]).toEqual({ index: 0, delta: { content: 'x' }, finish_reason: 'stop', extra: 1 });
    expect(chunk).not.toHaveProperty('usage');
  });

  it('keeps usage: null on intermediate chunks and normalises the usage chunk', () => {
    expect(parseChatCompletionChunk('{"id":"c","choices":[],"usage":null}').usage).toBeNull();
    expect(parseChatCompletionChunk('{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}').usage).toEqual({
      prompt_tokens: 1,
      completion_tokens: 2,
      total_tokens: 3,
    });
  });

  it('turns an in-stream error object into UpstreamStreamError', () => {
    expect(() => parseChatCompletionChunk('{"error":{"message":"boom","type":"server_error","code":null}}')).toThrow(
      new UpstreamStreamError('server_error', 'boom'),
    );
  });

  it('rejects JSON that is not a completion', () => {
    expect(() => parseChatCompletion('{"error":{"message":"nope"}}')).toThrow(UpstreamProtocolError);
    expect(() => parseChatCompletion('{"id":"x"}')).toThrow(UpstreamProtocolError);
    expect(() => parseChatCompletion('[')).toThrow(UpstreamProtocolError);
    const ok = parseChatCompletion('{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"length"}]}');
    expect(ok).toEqual({
      id: 'x',
      object: 'chat.completion',
      created: 0,
      model: '',
      choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'length' }],
    });
  });
});

describe('parseErrorBody', () => {
  it('prefers code, then type', () => {
    expect(parseErrorBody({ error: { message: 'm', type: 't', code: 'c' } })).toEqual({ message: 'm', code: 'c' });
    expect(parseErrorBody({ error: { message: 'm', type: 't', code: null } })).toEqual({ message: 'm', code: 't' });
    expect(parseErrorBody({ error: { message: 'm', code: 429 } })).toEqual({ message: 'm', code: '429' });
    expect(parseErrorBody({ message: 'not an error body' })).toBeUndefined();
  });
});
