/**
 * The OpenAI-compatible provider (UpstreamCallStep's HTTP client, docs/architecture.md
 * step 3) against the real mock over HTTP: usage always requested for billing
 * (M6.3 level 1), error classes and retryability, cancellation that really
 * closes the upstream request, timeouts, and protocol violations.
 */
import type http from 'node:http';
import {
  UpstreamCancelledError,
  UpstreamConnectionError,
  UpstreamErrorName,
  UpstreamHttpError,
  UpstreamProtocolError,
  UpstreamStreamError,
  UpstreamTimeoutError,
} from '../../src/upstream/errors';
import { DEFAULT_MOCK_BEHAVIOUR } from '../../src/upstream/mock/behaviour';
import { startMockUpstream, type MockUpstream } from '../../src/upstream/mock/server';
import { createOpenAICompatibleProvider } from '../../src/upstream/openai-compatible';
import type { UpstreamProvider } from '../../src/upstream/provider';
import { countPromptTokens } from '../../src/billing/token-count';
import { upstreamBody, type ChatCompletionRequest } from '../../src/openai/chat-request';
import { serializedUpstreamRequest } from '../../src/openai/serialized-request';
import type { ChatCompletionChunk } from '../../src/openai/chat-response';
import { cl100k, drain, userMessage, waitFor, withServer } from './helpers';

let mock: MockUpstream;
let provider: UpstreamProvider;

beforeAll(async () => {
  mock = await startMockUpstream();
  provider = createOpenAICompatibleProvider({ baseUrl: mock.url, apiKey: 'sk-test', timeoutMs: 5000 });
});
afterAll(async () => {
  await mock.close();
});
beforeEach(() => mock.setDefaults({ ...DEFAULT_MOCK_BEHAVIOUR }));

const request = (text: string, extra: Partial<ChatCompletionRequest> = {}): ChatCompletionRequest => ({
  model: 'gpt-4o-mini',
  messages: [userMessage(text)],
  ...extra,
});

const textOf = (chunks: ChatCompletionChunk[]): string => chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');

describe('complete()', () => {
  it('returns the completion with usage in the OpenAI shape, even if the request said stream: true', async () => {
    const req = request('what does it cost?', { stream: true, max_tokens: 9 });
    const result = await provider.complete(req);
    expect(result.object).toBe('chat.completion');
    expect(cl100k(result.choices[0]!.message.content!)).toBe(9);
    expect(result.choices[0]!.finish_reason).toBe('length');
    // The mock reports the gateway's own prompt estimate.
    const prompt = countPromptTokens(req.messages, req.model);
    expect(result.usage).toEqual({ prompt_tokens: prompt, completion_tokens: 9, total_tokens: prompt + 9 });
  });

  it('leaves usage undefined when the upstream reports none (billing falls back, M6.3)', async () => {
    const result = await provider.complete(request('[mock:omit_usage]'));
    expect(result.usage).toBeUndefined();
    expect(cl100k(result.choices[0]!.message.content!)).toBe(16);
  });

  it('throws a retryable UpstreamHttpError 500 for a failure before the first chunk', async () => {
    const error = await provider.complete(request('[mock:fail=before]')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UpstreamHttpError);
    expect(error).toMatchObject({ name: 'UpstreamHttpError', status: 500, code: 'mock_failure', retryable: true });
  });

  it('marks 429 retryable with Retry-After, and 4xx not retryable', async () => {
    const limited = await provider.complete(request('[mock:status=429]')).catch((e: unknown) => e);
    expect(limited).toMatchObject({ status: 429, code: 'rate_limit_exceeded', retryable: true, retryAfterMs: 1000 });
    const bad = await provider.complete(request('[mock:tokens=many]')).catch((e: unknown) => e);
    expect(bad).toMatchObject({ status: 400, code: 'invalid_request', retryable: false });
    const notFound = await provider.complete(request('[mock:status=404]')).catch((e: unknown) => e);
    expect(notFound).toMatchObject({ status: 404, retryable: false });
  });

  it('sends per-call headers (they win over directives) and the API key', async () => {
    const result = await provider.complete(request('[mock:tokens=8]'), { headers: { 'x-mock-tokens': '2' } });
    expect(result.usage!.completion_tokens).toBe(2);
    let seen: http.IncomingHttpHeaders = {};
    await withServer(
      (req, res) => {
        seen = req.headers;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: 'x', created: 1, model: 'm', choices: [], usage: { input_tokens: 3, output_tokens: 4 } }));
      },
      async (baseUrl) => {
        const custom = createOpenAICompatibleProvider({ baseUrl: `${baseUrl}/`, apiKey: 'sk-secret', headers: { 'x-org': 'o1' } });
        const result2 = await custom.complete(request('hi'));
        // Usage under other names is normalised to OpenAI's shape inside the adapter.
        expect(result2.usage).toEqual({ prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 });
      },
    );
    expect(seen.authorization).toBe('Bearer sk-secret');
    expect(seen['x-org']).toBe('o1');
  });

  it('rejects promptly with UpstreamCancelledError when the caller aborts a hung call, and the mock sees it', async () => {
    const before = mock.stats();
    const controller = new AbortController();
    const call = provider.complete(request('[mock:hang]'), { signal: controller.signal });
    await waitFor(() => mock.stats().inFlight === before.inFlight + 1);
    const abortedAt = Date.now();
    controller.abort(new Error('client went away'));
    const error = await call.catch((e: unknown) => e);
    expect(Date.now() - abortedAt).toBeLessThan(1000); // the hung mock alone would never end it
    expect(error).toBeInstanceOf(UpstreamCancelledError);
    expect((error as Error).cause).toEqual(new Error('client went away'));
    await waitFor(() => mock.stats().cancelled === before.cancelled + 1);
  });

  it('fails without sending anything when the signal is already aborted', async () => {
    const before = mock.stats();
    const error = await provider.complete(request('hi'), { signal: AbortSignal.abort() }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UpstreamCancelledError);
    expect(mock.stats().requests).toBe(before.requests);
  });

  it('throws UpstreamTimeoutError when the upstream does not answer in time, and closes the request', async () => {
    const before = mock.stats();
    const impatient = createOpenAICompatibleProvider({ baseUrl: mock.url, timeoutMs: 150 });
    const started = Date.now();
    const error = await impatient.complete(request('[mock:hang]')).catch((e: unknown) => e);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(error).toBeInstanceOf(UpstreamTimeoutError);
    expect(error).toMatchObject({ name: 'UpstreamTimeoutError', timeoutMs: 150, phase: 'response', retryable: true });
    await waitFor(() => mock.stats().cancelled === before.cancelled + 1);
  });

  it('throws a retryable UpstreamConnectionError when nothing listens', async () => {
    const closed = await startMockUpstream();
    const url = closed.url;
    await closed.close();
    const error = await createOpenAICompatibleProvider({ baseUrl: url }).complete(request('hi')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UpstreamConnectionError);
    expect((error as UpstreamConnectionError).retryable).toBe(true);
    expect((error as Error).message).toContain('ECONNREFUSED');
  });

  it('throws UpstreamProtocolError for a 200 that is not a completion', async () => {
    await withServer(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end('<html>proxy login</html>');
      },
      async (baseUrl) => {
        const error = await createOpenAICompatibleProvider({ baseUrl }).complete(request('hi')).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(UpstreamProtocolError);
        expect((error as UpstreamProtocolError).retryable).toBe(false);
      },
    );
  });
});

describe('stream()', () => {
  it('always asks for usage upstream, so the last chunk carries it even if the client did not ask', async () => {
    const req = request('bill me [mock:tokens=5]');
    const { chunks, error } = await drain(provider.stream(req));
    expect(error).toBeUndefined();
    expect(chunks).toHaveLength(5 + 2);
    expect(cl100k(textOf(chunks))).toBe(5);
    const prompt = countPromptTokens(req.messages, req.model);
    expect(chunks.at(-1)!.choices).toEqual([]);
    expect(chunks.at(-1)!.usage).toEqual({ prompt_tokens: prompt, completion_tokens: 5, total_tokens: prompt + 5 });
    expect(chunks[0]!.usage).toBeNull();
    expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe('stop');
  });

  it('streams the same text that complete() returns', async () => {
    const json = await provider.complete(request('same text'));
    const { chunks } = await drain(provider.stream(request('same text')));
    expect(textOf(chunks)).toBe(json.choices[0]!.message.content);
  });

  it('yields no usage chunk when the upstream omits usage', async () => {
    const { chunks, error } = await drain(provider.stream(request('[mock:omit_usage] [mock:tokens=3]')));
    expect(error).toBeUndefined();
    expect(chunks).toHaveLength(3 + 1);
    for (const chunk of chunks) expect(chunk.usage).toBeUndefined();
  });

  it('throws UpstreamHttpError 500 (retryable) before yielding anything for fail=before', async () => {
    const { chunks, error } = await drain(provider.stream(request('[mock:fail=before]')));
    expect(chunks).toEqual([]);
    expect(error).toBeInstanceOf(UpstreamHttpError);
    expect(error).toMatchObject({ status: 500, retryable: true });
  });

  it('yields exactly N chunks then throws UpstreamConnectionError for fail=after:N', async () => {
    for (const n of [0, 1, 3]) {
      const { chunks, error } = await drain(provider.stream(request(`[mock:fail=after:${n}]`)));
      expect(chunks).toHaveLength(n);
      expect(error).toBeInstanceOf(UpstreamConnectionError);
      expect((error as Error).name).toBe(UpstreamErrorName.Connection);
    }
  });

  it('rejects promptly on abort mid-stream and closes the upstream request', async () => {
    const before = mock.stats();
    const controller = new AbortController();
    const chunks: ChatCompletionChunk[] = [];
    let error: unknown;
    let abortedAt = 0;
    try {
      for await (const chunk of provider.stream(request('[mock:tokens=500] [mock:latency=20]'), { signal: controller.signal })) {
        chunks.push(chunk);
        if (chunks.length === 2) {
          abortedAt = Date.now();
          controller.abort();
        }
      }
    } catch (e) {
      error = e;
    }
    expect(Date.now() - abortedAt).toBeLessThan(1000); // the stream alone would run 10 s more
    expect(chunks).toHaveLength(2);
    expect(error).toBeInstanceOf(UpstreamCancelledError);
    await waitFor(() => mock.stats().cancelled === before.cancelled + 1);
    expect(mock.stats().inFlight).toBe(before.inFlight);
  });

  it('rejects a hung stream on abort with UpstreamCancelledError', async () => {
    const before = mock.stats();
    const controller = new AbortController();
    const pending = drain(provider.stream(request('[mock:hang]'), { signal: controller.signal }));
    await waitFor(() => mock.stats().inFlight === before.inFlight + 1);
    controller.abort();
    const { chunks, error } = await pending;
    expect(chunks).toEqual([]);
    expect(error).toBeInstanceOf(UpstreamCancelledError);
    await waitFor(() => mock.stats().cancelled === before.cancelled + 1);
  });

  it('releases the upstream request when the consumer stops early', async () => {
    const before = mock.stats();
    let seen = 0;
    for await (const _chunk of provider.stream(request('[mock:tokens=500] [mock:latency=10]'))) {
      seen += 1;
      if (seen === 3) break;
    }
    expect(seen).toBe(3);
    await waitFor(() => mock.stats().cancelled === before.cancelled + 1);
  });

  it('times out a silent stream (stream-idle), not a slow consumer', async () => {
    const idle = createOpenAICompatibleProvider({ baseUrl: mock.url, timeoutMs: 5000, streamIdleTimeoutMs: 250 });
    const silent = await drain(idle.stream(request('[mock:latency=2000] [mock:tokens=3]')));
    expect(silent.chunks).toEqual([]);
    expect(silent.error).toBeInstanceOf(UpstreamTimeoutError);
    expect(silent.error).toMatchObject({ phase: 'stream-idle', timeoutMs: 250 });

    // Chunks every 20 ms while the consumer spends 300 ms on each: no timeout.
    let count = 0;
    for await (const _chunk of idle.stream(request('[mock:latency=20] [mock:tokens=3]'))) {
      count += 1;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    expect(count).toBe(3 + 2); // tokens, finish chunk, usage chunk
  });

  it('throws UpstreamProtocolError when the stream ends without [DONE] or sends garbage', async () => {
    const cases: Array<[string, string]> = [
      ['data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[]}\n\n', 'without data: [DONE]'],
      ['data: {not json}\n\ndata: [DONE]\n\n', 'not JSON'],
      ['data: {"id":"c","choices":"nope"}\n\ndata: [DONE]\n\n', 'not a chat completion chunk'],
    ];
    for (const [body, message] of cases) {
      await withServer(
        (_req, res) => {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.end(body);
        },
        async (baseUrl) => {
          const { error } = await drain(createOpenAICompatibleProvider({ baseUrl }).stream(request('hi')));
          expect(error).toBeInstanceOf(UpstreamProtocolError);
          expect((error as Error).message).toContain(message);
        },
      );
    }
  });

  it('throws UpstreamStreamError for an error event inside the stream, after the chunks before it', async () => {
    await withServer(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: {"id":"c","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n');
        res.end('data: {"error":{"message":"overloaded","type":"server_error","code":"overloaded"}}\n\n');
      },
      async (baseUrl) => {
        const { chunks, error } = await drain(createOpenAICompatibleProvider({ baseUrl }).stream(request('hi')));
        expect(textOf(chunks)).toBe('Hi');
        expect(error).toBeInstanceOf(UpstreamStreamError);
        expect(error).toMatchObject({ code: 'overloaded', retryable: false });
      },
    );
  });
});

describe('a serialized request (the stored body\'s own bytes, issue 8)', () => {
  const stored = Buffer.from(JSON.stringify({ model: 'gpt-4o-mini', messages: [userMessage('spliced [mock:tokens=4]')], stream: true, stream_options: { include_usage: false }, max_tokens: 99, temperature: 0.5 }));

  it('goes out as a fixed-length body equal to the object path\'s request, JSON and SSE', async () => {
    const seen: Array<{ headers: http.IncomingHttpHeaders; body: unknown }> = [];
    const handler: http.RequestListener = (req, res) => {
      let text = '';
      req.on('data', (c: Buffer) => (text += c.toString('utf8')));
      req.on('end', () => {
        const body = JSON.parse(text) as { stream?: boolean };
        seen.push({ headers: req.headers, body });
        if (body.stream) {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.end('data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n');
        } else {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ id: 'c', object: 'chat.completion', created: 1, model: 'm', choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }] }));
        }
      });
    };
    await withServer(handler, async (baseUrl) => {
      const p = createOpenAICompatibleProvider({ baseUrl, timeoutMs: 5000 });
      const parsed = upstreamBody(JSON.parse(stored.toString('utf8')) as ChatCompletionRequest, 16) as unknown as ChatCompletionRequest;
      await p.complete(serializedUpstreamRequest(stored, 16)!);
      await p.complete(parsed);
      await drain(p.stream(serializedUpstreamRequest(stored, 16)!));
      await drain(p.stream(parsed));
    });
    expect(seen).toHaveLength(4);
    // The spliced request is the object path's request, member for member.
    expect(seen[0]!.body).toEqual(seen[1]!.body);
    expect(seen[2]!.body).toEqual(seen[3]!.body);
    expect(seen[0]!.body).toMatchObject({ stream: false, max_tokens: 16, temperature: 0.5 });
    expect(seen[0]!.body).not.toHaveProperty('stream_options');
    expect(seen[2]!.body).toMatchObject({ stream: true, stream_options: { include_usage: true }, max_tokens: 16 });
    // Sent with its length, not chunked.
    for (const { headers } of [seen[0]!, seen[2]!]) {
      expect(headers['transfer-encoding']).toBeUndefined();
      expect(Number(headers['content-length'])).toBeGreaterThan(0);
    }
  });

  it('is billed by the mock like the same request as an object', async () => {
    const result = await provider.complete(serializedUpstreamRequest(stored, 16)!);
    expect(result.usage?.completion_tokens).toBe(4);
    expect(mock.stats().lastRequest?.maxTokens).toBe(16);
  });
});
