/**
 * The mock upstream over real HTTP: exact, deterministic token counts and usage
 * (the figures every billing test relies on, M6.2/M6.3), usage on/off, latency,
 * faults, cancellation and the directive/header precedence.
 */
import { createHash } from 'node:crypto';
import { countPromptTokens } from '../../../src/billing/token-count';
import type { ChatCompletion, ChatCompletionChunk } from '../../../src/openai/chat-response';
import { parseSseEvents } from '../../../src/openai/sse';
import { DEFAULT_MOCK_BEHAVIOUR } from '../../../src/upstream/mock/behaviour';
import { startMockUpstream, type MockUpstream } from '../../../src/upstream/mock/server';
import { startImageServer } from '../../helpers/image-server';
import { cl100k, postChat, sseData, userMessage, waitFor } from '../helpers';

let mock: MockUpstream;

beforeAll(async () => {
  mock = await startMockUpstream();
});
afterAll(async () => {
  await mock.close();
});
beforeEach(() => {
  mock.setDefaults({ ...DEFAULT_MOCK_BEHAVIOUR });
});

async function completion(body: Record<string, unknown>, headers?: Record<string, string>): Promise<ChatCompletion> {
  const res = await postChat(mock.url, body, headers);
  expect(res.status).toBe(200);
  return (await res.json()) as ChatCompletion;
}

async function streamChunks(body: Record<string, unknown>, headers?: Record<string, string>): Promise<{
  chunks: ChatCompletionChunk[];
  done: boolean;
}> {
  const res = await postChat(mock.url, { ...body, stream: true }, headers);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
  const data = await sseData(res);
  const done = data.at(-1) === '[DONE]';
  const chunks = (done ? data.slice(0, -1) : data).map((d) => JSON.parse(d) as ChatCompletionChunk);
  return { chunks, done };
}

const contentOf = (chunks: ChatCompletionChunk[]): string =>
  chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');

describe('mock upstream: JSON answers', () => {
  it('answers with exactly 16 tiktoken tokens by default and reports exact usage', async () => {
    const messages = [{ role: 'system', content: 'You are terse.' }, userMessage('How much is left on my quota?')];
    const body = await completion({ model: 'gpt-4o-mini', messages });
    const content = body.choices[0]!.message.content!;
    expect(body.object).toBe('chat.completion');
    expect(body.model).toBe('gpt-4o-mini');
    expect(cl100k(content)).toBe(16);
    expect(content.split(' ')).toHaveLength(16);
    expect(body.choices[0]!.finish_reason).toBe('stop');
    // The mock reports the gateway's own estimate (one prompt formula for the whole project).
    const promptTokens = countPromptTokens(messages, 'gpt-4o-mini');
    expect(body.usage).toEqual({ prompt_tokens: promptTokens, completion_tokens: 16, total_tokens: promptTokens + 16 });
  });

  it('is deterministic per prompt and differs between prompts', async () => {
    const a1 = await completion({ model: 'm', messages: [userMessage('alpha prompt')] });
    const a2 = await completion({ model: 'm', messages: [userMessage('alpha prompt')] });
    const b = await completion({ model: 'm', messages: [userMessage('beta prompt')] });
    expect(a2.choices[0]!.message.content).toBe(a1.choices[0]!.message.content);
    expect(b.choices[0]!.message.content).not.toBe(a1.choices[0]!.message.content);
  });

  it('caps the reply at max_tokens / max_completion_tokens (the smaller) with finish_reason length', async () => {
    const capped = await completion({ model: 'm', messages: [userMessage('cap me')], max_tokens: 5 });
    expect(cl100k(capped.choices[0]!.message.content!)).toBe(5);
    expect(capped.usage!.completion_tokens).toBe(5);
    expect(capped.choices[0]!.finish_reason).toBe('length');
    const both = await completion({ model: 'm', messages: [userMessage('cap me')], max_tokens: 5, max_completion_tokens: 3 });
    expect(both.usage!.completion_tokens).toBe(3);
    const loose = await completion({ model: 'm', messages: [userMessage('cap me')], max_tokens: 500 });
    expect(loose.usage!.completion_tokens).toBe(16);
    expect(loose.choices[0]!.finish_reason).toBe('stop');
  });

  it('counts text content parts and ignores the directive when choosing words', async () => {
    const parts = [
      { type: 'text', text: 'first part' },
      { type: 'image_url', image_url: { url: 'data:,' } },
      { type: 'text', text: 'second part' },
    ];
    const body = await completion({ model: 'm', messages: [{ role: 'user', content: parts }] });
    // The formula spelled out ('m' counts with cl100k_base): reply priming 3, then per message
    // 3 + role + the text parts joined by a newline + 1445 for the image part, whose size
    // 'data:,' does not tell (the tile rule's worst case).
    expect(body.usage!.prompt_tokens).toBe(3 + 3 + cl100k('user') + cl100k('first part\nsecond part') + 1445);
    const plain = await completion({ model: 'm', messages: [userMessage('same words')] });
    const directed = await completion({ model: 'm', messages: [userMessage('same words [mock:tokens=16]')] });
    expect(directed.choices[0]!.message.content).toBe(plain.choices[0]!.message.content);
  });

  it('counts an http(s) image at the size it fetches, as a provider bills it; an unreachable one at the worst case', async () => {
    const images = await startImageServer();
    try {
      const ask = async (url: string, detail?: string): Promise<number> => {
        const content = [{ type: 'text', text: 'look' }, { type: 'image_url', image_url: { url, ...(detail ? { detail } : {}) } }];
        return (await completion({ model: 'm', messages: [{ role: 'user', content }] })).usage!.prompt_tokens - (3 + 3 + cl100k('user') + cl100k('look'));
      };
      expect(await ask(images.url('high-2048x4096.png'))).toBe(1105);
      expect(await ask(images.url('progressive-1000x3000.jpg'), 'high')).toBe(85 + 8 * 170);
      expect(await ask(images.url('lossy-800x600.webp'))).toBe(85 + 4 * 170);
      expect(images.hits.get('lossy-800x600.webp')).toBe(1);
      expect(await ask(images.url('no-such-image.png'))).toBe(1445);
      // Low detail costs 85 whatever the image.
      expect(await ask(images.url('high-2048x4096.png'), 'low')).toBe(85);
    } finally {
      await images.close();
    }
  });

  it('omits usage with [mock:omit_usage]', async () => {
    const body = await completion({ model: 'm', messages: [userMessage('no usage please [mock:omit_usage]')] });
    expect(body).not.toHaveProperty('usage');
    expect(cl100k(body.choices[0]!.message.content!)).toBe(16);
  });
});

describe('mock upstream: streaming', () => {
  it('sends one chunk per token, a finish chunk, the usage chunk and [DONE] when include_usage is set', async () => {
    const messages = [userMessage('stream me seven [mock:tokens=7]')];
    const { chunks, done } = await streamChunks({ model: 'gpt-4o', messages, stream_options: { include_usage: true } });
    expect(done).toBe(true);
    expect(chunks).toHaveLength(7 + 2);
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
    for (const chunk of chunks.slice(0, 7)) {
      expect(cl100k(chunk.choices[0]!.delta.content!)).toBe(1);
      expect(chunk.usage).toBeNull();
    }
    expect(chunks[7]!.choices[0]).toEqual({ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' });
    const promptTokens = countPromptTokens(messages, 'gpt-4o');
    expect(chunks[8]!.choices).toEqual([]);
    expect(chunks[8]!.usage).toEqual({ prompt_tokens: promptTokens, completion_tokens: 7, total_tokens: promptTokens + 7 });
    expect(cl100k(contentOf(chunks))).toBe(7);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
  });

  it('streams the same text as the JSON answer for the same prompt', async () => {
    const messages = [userMessage('identical either way')];
    const json = await completion({ model: 'm', messages });
    const { chunks } = await streamChunks({ model: 'm', messages });
    expect(contentOf(chunks)).toBe(json.choices[0]!.message.content);
  });

  it('sends no usage at all when the request did not ask for it', async () => {
    const { chunks, done } = await streamChunks({ model: 'm', messages: [userMessage('quiet')] });
    expect(done).toBe(true);
    expect(chunks).toHaveLength(16 + 1);
    for (const chunk of chunks) expect(chunk).not.toHaveProperty('usage');
  });

  it('sends no usage chunk under [mock:omit_usage] even when asked', async () => {
    const { chunks, done } = await streamChunks({
      model: 'm',
      messages: [userMessage('hide it [mock:omit_usage] [mock:tokens=4]')],
      stream_options: { include_usage: true },
    });
    expect(done).toBe(true);
    expect(chunks).toHaveLength(4 + 1);
    for (const chunk of chunks) expect(chunk).not.toHaveProperty('usage');
  });

  it('waits tokenLatencyMs before every token and firstByteLatencyMs before the headers', async () => {
    const started = Date.now();
    const res = await postChat(mock.url, {
      model: 'm',
      stream: true,
      messages: [userMessage('slow [mock:ttfb=150] [mock:latency=40] [mock:tokens=5]')],
    });
    const headersAfter = Date.now() - started;
    expect(headersAfter).toBeGreaterThanOrEqual(145);
    const arrivals: number[] = [];
    for await (const event of parseSseEvents(res.body!)) {
      if (event.data !== '[DONE]') arrivals.push(Date.now());
    }
    expect(arrivals).toHaveLength(5 + 1);
    for (let i = 1; i < 5; i += 1) expect(arrivals[i]! - arrivals[i - 1]!).toBeGreaterThanOrEqual(35);
    expect(arrivals[4]! - started).toBeGreaterThanOrEqual(150 + 5 * 40 - 10);
  });
});

describe('mock upstream: faults', () => {
  it('answers HTTP 500 with an OpenAI error body for [mock:fail=before]', async () => {
    for (const stream of [false, true]) {
      const res = await postChat(mock.url, { model: 'm', stream, messages: [userMessage('[mock:fail=before]')] });
      expect(res.status).toBe(500);
      expect(await res.json()).toEqual({
        error: { message: 'mock upstream failed before the first chunk', type: 'server_error', code: 'mock_failure', param: null },
      });
    }
  });

  it('answers the requested status with retry-after for 429', async () => {
    const res = await postChat(mock.url, { model: 'm', messages: [userMessage('[mock:status=429]')] });
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(await res.json()).toEqual({
      error: { message: 'mock status 429', type: 'requests', code: 'rate_limit_exceeded', param: null },
    });
  });

  it('writes exactly N events then destroys the socket for [mock:fail=after:N]', async () => {
    const res = await postChat(mock.url, { model: 'm', stream: true, messages: [userMessage('[mock:fail=after:3]')] });
    expect(res.status).toBe(200);
    const received: string[] = [];
    const read = async (): Promise<void> => {
      for await (const event of parseSseEvents(res.body!)) {
        received.push(event.data);
      }
    };
    await expect(read()).rejects.toThrow('terminated');
    expect(received).toHaveLength(3);
    expect(received).not.toContain('[DONE]');
    await waitFor(() => mock.stats().inFlight === 0);
  });

  it('hangs until the client aborts, then counts the cancellation', async () => {
    const before = mock.stats();
    const controller = new AbortController();
    const pending = postChat(mock.url, { model: 'm', messages: [userMessage('[mock:hang]')] }, {}, controller.signal);
    await waitFor(() => mock.stats().inFlight === before.inFlight + 1);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(mock.stats().inFlight).toBe(before.inFlight + 1); // still hanging
    controller.abort();
    await expect(pending).rejects.toThrow('aborted');
    await waitFor(() => mock.stats().cancelled === before.cancelled + 1);
    expect(mock.stats()).toMatchObject({ requests: before.requests + 1, inFlight: before.inFlight, cancelled: before.cancelled + 1 });
  });

  it('records what the last request carried: its size, the hash of its messages, its output cap', async () => {
    const messages = [{ role: 'user', content: [{ type: 'text', text: 'look' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } }] }];
    const body = JSON.stringify({ model: 'mock-small', messages, max_tokens: 5 });
    const res = await fetch(`${mock.url}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    expect(res.status).toBe(200);
    expect(mock.stats().lastRequest).toEqual({ bytes: Buffer.byteLength(body), messagesSha256: createHash('sha256').update(JSON.stringify(messages)).digest('hex'), maxTokens: 5 });
  });

  it('notices a client leaving mid-stream and stops writing', async () => {
    const before = mock.stats();
    const controller = new AbortController();
    const res = await postChat(
      mock.url,
      { model: 'm', stream: true, messages: [userMessage('[mock:tokens=200] [mock:latency=10]')] },
      {},
      controller.signal,
    );
    const reader = res.body!.getReader();
    await reader.read();
    controller.abort();
    await waitFor(() => mock.stats().cancelled === before.cancelled + 1);
    expect(mock.stats().inFlight).toBe(before.inFlight);
  });
});

describe('mock upstream: precedence and control endpoints', () => {
  it('takes header over directive over defaults', async () => {
    mock.setDefaults({ completionTokens: 10 });
    const ask = async (text: string, headers?: Record<string, string>): Promise<number> =>
      (await completion({ model: 'm', messages: [userMessage(text)] }, headers)).usage!.completion_tokens;
    expect(await ask('plain')).toBe(10);
    expect(await ask('directed [mock:tokens=20]')).toBe(20);
    expect(await ask('directed [mock:tokens=20]', { 'x-mock-tokens': '30' })).toBe(30);
    expect(await ask('plain', { 'x-mock-tokens': '3' })).toBe(3);
  });

  it('reads directives from the last user message only', async () => {
    const body = await completion({
      model: 'm',
      messages: [userMessage('[mock:tokens=2]'), { role: 'assistant', content: 'ok' }, userMessage('[mock:tokens=4]')],
    });
    expect(body.usage!.completion_tokens).toBe(4);
  });

  it('sets defaults at run time with PUT /__mock/defaults', async () => {
    const origin = mock.url.replace(/\/v1$/, '');
    const put = await fetch(`${origin}/__mock/defaults`, { method: 'PUT', body: JSON.stringify({ completionTokens: 6 }) });
    expect(put.status).toBe(200);
    expect(((await put.json()) as { completionTokens: number }).completionTokens).toBe(6);
    expect((await completion({ model: 'm', messages: [userMessage('six')] })).usage!.completion_tokens).toBe(6);
    const bad = await fetch(`${origin}/__mock/defaults`, { method: 'PUT', body: JSON.stringify({ tokens: 6 }) });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { type: string } }).error.type).toBe('invalid_request_error');
  });

  it('rejects malformed requests and directives with 400 in the OpenAI error shape', async () => {
    const cases: Array<[unknown, string]> = [
      [{ model: 'm', messages: [] }, 'messages'],
      [{ messages: [userMessage('hi')] }, 'model'],
      [{ model: 'm', messages: [userMessage('hi')], max_tokens: 0 }, 'max_tokens'],
      // The gateway's own schema (src/openai/chat-request.ts), stricter rules included.
      [{ model: 'm', messages: [{ role: 'user', content: [{ type: 'text' }] }] }, 'a text part needs a string text'],
      [{ model: 'm', messages: [{ role: 'user' }] }, 'a user message needs content'],
      [{ model: 'm', messages: [userMessage('[mock:tokens=lots]')] }, 'tokens'],
    ];
    for (const [body, mention] of cases) {
      const res = await postChat(mock.url, body as Record<string, unknown>);
      expect(res.status).toBe(400);
      const error = ((await res.json()) as { error: { message: string; type: string } }).error;
      expect(error.type).toBe('invalid_request_error');
      expect(error.message).toContain(mention);
    }
    const notJson = await fetch(`${mock.url}/chat/completions`, { method: 'POST', body: '{nope' });
    expect(notJson.status).toBe(400);
  });

  it('serves /v1/models, /v1/models/:id, /healthz and 404s the rest', async () => {
    const models = (await (await fetch(`${mock.url}/models`)).json()) as { object: string; data: Array<{ id: string }> };
    expect(models.object).toBe('list');
    expect(models.data.map((m) => m.id)).toEqual(['gpt-4o-mini', 'gpt-4o', 'mock-small']);
    const one = (await (await fetch(`${mock.url}/models/any-model-at-all`)).json()) as { id: string };
    expect(one.id).toBe('any-model-at-all');
    const health = await fetch(mock.url.replace(/\/v1$/, '/healthz'));
    expect(await health.json()).toEqual({ status: 'ok' });
    const missing = await fetch(`${mock.url}/audio/speech`, { method: 'POST' });
    expect(missing.status).toBe(404);
  });
});
