import fs from 'node:fs';
import path from 'node:path';
import { Tiktoken } from 'tiktoken';
import { WORST_CASE_IMAGE_TOKENS } from '../../src/billing/image-tokens';
import {
  NON_TEXT_PART_TOKENS,
  TokenCountError,
  TokenEncoding,
  countPromptTokens,
  countTextTokens,
  encodingForModel,
  type ChatMessageForCount,
  type PromptCountOptions,
} from '../../src/billing/token-count';

// The example conversation of OpenAI's cookbook "How to count tokens with tiktoken",
// whose published counts are 129 prompt tokens for gpt-4 and 124 for gpt-4o.
const cookbookMessages: ChatMessageForCount[] = [
  { role: 'system', content: 'You are a helpful, pattern-following assistant that translates corporate jargon into plain English.' },
  { role: 'system', name: 'example_user', content: 'New synergies will help drive top-line growth.' },
  { role: 'system', name: 'example_assistant', content: 'Things working well together will increase revenue.' },
  { role: 'system', name: 'example_user', content: "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage." },
  { role: 'system', name: 'example_assistant', content: "Let's talk later when we're less busy about how to do better." },
  { role: 'user', content: "This late pivot means we don't have time to boil the ocean for the client deliverable." },
];

describe('encodingForModel (M6.2)', () => {
  it.each([
    ['gpt-4o', TokenEncoding.o200k],
    ['gpt-4o-mini-2024-07-18', TokenEncoding.o200k],
    ['o1-preview', TokenEncoding.o200k],
    ['gpt-4.1-nano', TokenEncoding.o200k],
    ['openai/gpt-4o', TokenEncoding.o200k],
    ['gpt-4', TokenEncoding.cl100k],
    ['gpt-3.5-turbo', TokenEncoding.cl100k],
    ['my-self-hosted-llama', TokenEncoding.cl100k],
  ])('%s counts with %s', (model, encoding) => {
    expect(encodingForModel(model)).toBe(encoding);
  });
});

describe('countTextTokens (M6.2)', () => {
  it('counts known strings exactly', () => {
    expect(countTextTokens('hello world', 'gpt-4')).toBe(2);
    expect(countTextTokens('hello world', 'gpt-4o')).toBe(2);
    expect(countTextTokens('tiktoken is great!', 'gpt-4')).toBe(6);
  });

  it('uses the model encoding: the two encodings differ on Chinese text', () => {
    expect(countTextTokens('你好，世界', 'gpt-4')).toBe(6);
    expect(countTextTokens('你好，世界', 'gpt-4o')).toBe(3);
  });

  it('counts a 2 MB run without a break (tiktoken alone fails on it) in pieces, close to the whole count', () => {
    const run = 'x'.repeat(2 * 1024 * 1024);
    const tokens = countTextTokens(run, 'gpt-4o-mini');
    expect(tokens).toBeGreaterThan(run.length / 16);
    expect(tokens).toBeLessThan(run.length);
    // Ordinary text is cut at whitespace: the same count as whole (compared below tiktoken's limit).
    const unit = ' lorem ipsum dolor sit amet';
    expect(countTextTokens(unit.repeat(8000), 'gpt-4o-mini')).toBe(8000 * countTextTokens(unit, 'gpt-4o-mini'));
  });

  it('counts the empty string as 0', () => {
    expect(countTextTokens('', 'gpt-4o')).toBe(0);
  });

  it('wraps a tokenizer failure in TokenCountError without the text in its message', () => {
    const spy = jest.spyOn(Tiktoken.prototype, 'encode_ordinary').mockImplementation(() => {
      throw new Error('wasm trap');
    });
    try {
      expect(() => countTextTokens('secret prompt', 'gpt-4o')).toThrow(TokenCountError);
      expect(() => countTextTokens('secret prompt', 'gpt-4o')).toThrow(/^tiktoken failed to count tokens with o200k_base$/);
    } finally {
      spy.mockRestore();
    }
    expect(countTextTokens('secret prompt', 'gpt-4o')).toBe(2);
  });

  it('counts special-token text typed by a user as ordinary text instead of throwing', () => {
    expect(countTextTokens('<|endoftext|>', 'gpt-4')).toBe(7);
  });
});

describe('countPromptTokens (OpenAI chat formula)', () => {
  it('matches the cookbook: 129 tokens for gpt-4', () => {
    expect(countPromptTokens(cookbookMessages, 'gpt-4')).toBe(129);
  });

  it('matches the cookbook: 124 tokens for gpt-4o', () => {
    expect(countPromptTokens(cookbookMessages, 'gpt-4o')).toBe(124);
  });

  it('is 3 per message + role + content + 3 priming for one short message', () => {
    // 3 + "user"(1) + "hello world"(2) + 3
    expect(countPromptTokens([{ role: 'user', content: 'hello world' }], 'gpt-4')).toBe(9);
  });

  it('adds the name tokens plus one', () => {
    // 9 + "bob"(1) + 1
    expect(countPromptTokens([{ role: 'user', name: 'bob', content: 'hello world' }], 'gpt-4')).toBe(11);
  });

  it('counts the text parts as the one text they carry, joined by newlines', () => {
    const asParts = countPromptTokens(
      [{ role: 'user', content: [{ type: 'text', text: 'hello' }, { type: 'text', text: ' world' }] }],
      'gpt-4',
    );
    // 3 + "user"(1) + "hello" "\n" " world"(3) + 3: the newline joining the parts is a token
    expect(asParts).toBe(10);
    expect(asParts).toBe(countPromptTokens([{ role: 'user', content: 'hello\n world' }], 'gpt-4'));
  });

  it('counts refusal parts as text and media other than images at the fixed amount', () => {
    // 3 + "assistant"(1) + "hello world"(2) + 3
    expect(countPromptTokens([{ role: 'assistant', content: [{ type: 'refusal', refusal: 'hello world' }] }], 'gpt-4')).toBe(9);
    // A text part without string text carries no text: it costs like media.
    expect(countPromptTokens([{ role: 'user', content: [{ type: 'text' }, { type: 'input_audio' }] }], 'gpt-4')).toBe(
      7 + 2 * NON_TEXT_PART_TOKENS,
    );
    expect(NON_TEXT_PART_TOKENS).toBe(85);
  });

  describe('images, by the tile rule (docs/pricing.md)', () => {
    const fixture = (name: string): string => fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'images', name)).toString('base64');
    // 3 + "user"(1) + "hello world"(2) + 3: the message without its image.
    const withImage = (image: Record<string, unknown>, opts?: PromptCountOptions): number =>
      countPromptTokens([{ role: 'user', content: [{ type: 'text', text: 'hello world' }, { type: 'image_url', image_url: image }] }], 'gpt-4', opts) - 9;

    it('counts low detail at 85, whatever the image', () => {
      expect(withImage({ url: 'https://example.com/huge.png', detail: 'low' })).toBe(85);
      expect(withImage({ url: `data:image/png;base64,${fixture('high-2048x4096.png')}`, detail: 'low' })).toBe(85);
    });

    it('counts an image of unknown size (a URL) at the rule\'s worst case, or IMAGE_WORST_CASE_TOKENS', () => {
      expect(withImage({ url: 'https://example.com/cat.png' })).toBe(WORST_CASE_IMAGE_TOKENS);
      expect(withImage({ url: 'https://example.com/cat.png', detail: 'high' })).toBe(1445);
      expect(withImage({ url: 'https://example.com/cat.png', detail: 'auto' }, { imageWorstCaseTokens: 3000 })).toBe(3000);
      // No URL at all is no size either.
      expect(countPromptTokens([{ role: 'user', content: [{ type: 'image_url' }] }], 'gpt-4')).toBe(7 + 1445);
    });

    it('counts inline base64 PNG and JPEG images exactly, from their headers', () => {
      expect(withImage({ url: `data:image/png;base64,${fixture('high-2048x4096.png')}`, detail: 'high' })).toBe(1105);
      expect(withImage({ url: `data:image/jpeg;base64,${fixture('square-1024.jpg')}` })).toBe(765);
      expect(withImage({ url: `data:image/jpeg;base64,${fixture('progressive-1000x3000.jpg')}`, detail: 'auto' })).toBe(85 + 8 * 170);
      expect(withImage({ url: `data:image/gif;base64,${fixture('small-300x200.gif')}` })).toBe(255);
      // Unreadable inline data is unknown: the worst case.
      expect(withImage({ url: `data:image/png;base64,${Buffer.from('noise').toString('base64')}` })).toBe(1445);
    });

    it('asks a size resolver first (the mock upstream\'s fetched images)', () => {
      const imageSize = (url: string) => (url === 'https://example.com/a.png' ? { width: 1024, height: 1024 } : undefined);
      expect(withImage({ url: 'https://example.com/a.png' }, { imageSize })).toBe(765);
      expect(withImage({ url: 'https://example.com/b.png' }, { imageSize })).toBe(1445);
    });
  });

  it('counts null content as nothing and an empty conversation as the priming only', () => {
    // 3 + "assistant"(1) + 0 + 3
    expect(countPromptTokens([{ role: 'assistant', content: null }], 'gpt-4')).toBe(7);
    expect(countPromptTokens([], 'gpt-4')).toBe(3);
  });

  it('counts tool call names and arguments, and tool_call_id', () => {
    const messages: ChatMessageForCount[] = [
      { role: 'assistant', content: null, tool_calls: [{ function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: 'sunny' },
    ];
    // o200k_base: priming 3 + (3 + "assistant" 1 + "get_weather" 2 + '{"city":"Paris"}' 5)
    //                      + (3 + "tool" 1 + "call_1" 3 + "sunny" 2)
    expect(countPromptTokens(messages, 'gpt-4o')).toBe(23);
  });
});
