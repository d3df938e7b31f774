/**
 * The official `openai` client (v5) pointed at the mock: proof that the mock
 * speaks the real protocol, so gateway tests can use stock clients.
 */
import OpenAI from 'openai';
import { countPromptTokens } from '../../src/billing/token-count';
import { startMockUpstream, type MockUpstream } from '../../src/upstream/mock/server';
import { cl100k } from './helpers';

let mock: MockUpstream;
let client: OpenAI;

beforeAll(async () => {
  mock = await startMockUpstream();
  client = new OpenAI({ baseURL: mock.url, apiKey: 'x', maxRetries: 0 });
});
afterAll(async () => {
  await mock.close();
});

describe('official openai client against the mock upstream', () => {
  it('reads a JSON completion with usage', async () => {
    const messages = [{ role: 'user' as const, content: 'Summarise my invoice' }];
    const completion = await client.chat.completions.create({ model: 'gpt-4o-mini', messages, max_completion_tokens: 12 });
    const content = completion.choices[0]!.message.content!;
    expect(cl100k(content)).toBe(12);
    expect(completion.choices[0]!.finish_reason).toBe('length');
    // The mock reports the gateway's own prompt estimate.
    const prompt = countPromptTokens(messages, 'gpt-4o-mini');
    expect(completion.usage).toEqual({ prompt_tokens: prompt, completion_tokens: 12, total_tokens: prompt + 12 });
  });

  it('reads a stream with the usage chunk and the same text as the JSON answer', async () => {
    const messages = [{ role: 'user' as const, content: 'Stream my invoice [mock:tokens=6]' }];
    const json = await client.chat.completions.create({ model: 'gpt-4o', messages });
    const stream = await client.chat.completions.create({
      model: 'gpt-4o',
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let chunks = 0;
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      chunks += 1;
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    expect(chunks).toBe(6 + 2);
    expect(text).toBe(json.choices[0]!.message.content);
    expect(cl100k(text)).toBe(6);
    const prompt = countPromptTokens(messages, 'gpt-4o');
    expect(usage).toEqual({ prompt_tokens: prompt, completion_tokens: 6, total_tokens: prompt + 6 });
  });

  it('surfaces mock failures as the client library error classes', async () => {
    const limited = client.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: '[mock:status=429]' }],
    });
    await expect(limited).rejects.toBeInstanceOf(OpenAI.RateLimitError);
    const failed = client.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: '[mock:fail=before]' }],
      stream: true,
    });
    await expect(failed).rejects.toMatchObject({ status: 500, code: 'mock_failure' });
  });

  it('lists the mock models', async () => {
    const ids: string[] = [];
    for await (const model of client.models.list()) ids.push(model.id);
    expect(ids).toEqual(['gpt-4o-mini', 'gpt-4o', 'mock-small']);
  });
});
