/**
 * Embeddings and the Responses API between the OpenAI-compatible provider and the mock
 * upstream, over real HTTP (issue 11): the mock's shapes and determinism, its behaviour
 * knobs on both endpoints, and the provider's reading of a Responses event stream (it ends
 * at the terminal event; a stream cut short, an `error` event or a stream without a terminal
 * event is an error, never a silent success).
 */
import {
  UpstreamCancelledError,
  UpstreamConnectionError,
  UpstreamHttpError,
  UpstreamProtocolError,
  UpstreamStreamError,
} from '../../src/upstream/errors';
import { DEFAULT_MOCK_BEHAVIOUR } from '../../src/upstream/mock/behaviour';
import { startMockUpstream, type MockUpstream } from '../../src/upstream/mock/server';
import { createOpenAICompatibleProvider } from '../../src/upstream/openai-compatible';
import type { UpstreamProvider } from '../../src/upstream/provider';
import type { ResponsesStreamEvent } from '../../src/openai/responses';
import { splicedUpstreamRequest } from '../../src/openai/serialized-request';
import { cl100k, waitFor, withServer } from './helpers';

let mock: MockUpstream;
let provider: Required<UpstreamProvider>;

beforeAll(async () => {
  mock = await startMockUpstream();
  provider = createOpenAICompatibleProvider({ baseUrl: mock.url, timeoutMs: 5000 }) as Required<UpstreamProvider>;
});
afterAll(async () => {
  await mock.close();
});
beforeEach(() => mock.setDefaults({ ...DEFAULT_MOCK_BEHAVIOUR }));

async function events(stream: AsyncIterable<ResponsesStreamEvent>): Promise<{ events: ResponsesStreamEvent[]; error?: unknown }> {
  const seen: ResponsesStreamEvent[] = [];
  try {
    for await (const event of stream) seen.push(event);
    return { events: seen };
  } catch (error) {
    return { events: seen, error };
  }
}

describe('embeddings', () => {
  it('answers one unit vector per input, the same input always the same vector, usage = the input tokens', async () => {
    const answer = await provider.embeddings({ model: 'text-embedding-3-small', input: ['ledger quota', 'refund', 'ledger quota'], encoding_format: 'float' });
    const data = answer.data as Array<{ index: number; embedding: number[]; object: string }>;
    expect(data.map((d) => [d.object, d.index, d.embedding.length])).toEqual([['embedding', 0, 1536], ['embedding', 1, 1536], ['embedding', 2, 1536]]);
    expect(data[2]!.embedding).toEqual(data[0]!.embedding);
    expect(Math.abs(Math.hypot(...data[1]!.embedding) - 1)).toBeLessThan(1e-5);
    // Counted here with an independent encoder: cl100k is text-embedding-3's encoding.
    const tokens = cl100k('ledger quota') * 2 + cl100k('refund');
    expect(answer.usage).toEqual({ prompt_tokens: tokens, total_tokens: tokens });
    expect(answer.object).toBe('list');
  });

  it('answers base64 as little-endian float32 bytes of the same vector, dimensions as asked (3072 by default for -large)', async () => {
    const floats = await provider.embeddings({ model: 'text-embedding-3-large', input: 'budget', encoding_format: 'float' });
    const base64 = await provider.embeddings({ model: 'text-embedding-3-large', input: 'budget', encoding_format: 'base64' });
    const bytes = Buffer.from((base64.data as Array<{ embedding: string }>)[0]!.embedding, 'base64');
    const decoded = Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4));
    expect(decoded).toHaveLength(3072);
    expect(decoded).toEqual((floats.data as Array<{ embedding: number[] }>)[0]!.embedding);
    const small = await provider.embeddings({ model: 'text-embedding-3-large', input: [[1, 2, 3]], dimensions: 8 });
    expect((small.data as Array<{ embedding: number[] }>)[0]!.embedding).toHaveLength(8);
    expect(small.usage).toEqual({ prompt_tokens: 3, total_tokens: 3 });
  });

  it('honours the knobs: status, omit_usage, and a client abort cancels the request', async () => {
    await expect(provider.embeddings({ model: 'm', input: 'x [mock:status=429]' })).rejects.toBeInstanceOf(UpstreamHttpError);
    expect((await provider.embeddings({ model: 'm', input: 'x [mock:omit_usage]' })).usage).toBeUndefined();
    const before = mock.stats().cancelled;
    const abort = new AbortController();
    const call = provider.embeddings({ model: 'm', input: 'x [mock:hang]' }, { signal: abort.signal });
    await waitFor(() => mock.stats().inFlight > 0);
    abort.abort();
    await expect(call).rejects.toBeInstanceOf(UpstreamCancelledError);
    await waitFor(() => mock.stats().cancelled === before + 1);
  });
});

describe('responses', () => {
  const ask = (text: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({ model: 'gpt-4o-mini', input: text, ...extra });

  it('answers a Response object: output message, usage in the Responses shape, incomplete when max_output_tokens cuts it', async () => {
    const answer = await provider.respond(ask('hello [mock:tokens=7]'));
    expect(answer).toMatchObject({ object: 'response', status: 'completed', model: 'gpt-4o-mini', incomplete_details: null });
    const [message] = answer.output as Array<{ type: string; role: string; content: Array<{ type: string; text: string }> }>;
    expect(message).toMatchObject({ type: 'message', role: 'assistant' });
    expect(cl100k(message!.content[0]!.text)).toBe(7);
    expect(answer.usage).toMatchObject({ output_tokens: 7, input_tokens_details: { cached_tokens: 0 }, output_tokens_details: { reasoning_tokens: 0 } });
    const cut = await provider.respond(ask('hello [mock:tokens=30]', { max_output_tokens: 16 }));
    expect(cut).toMatchObject({ status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' }, usage: expect.objectContaining({ output_tokens: 16 }) });
  });

  it('streams the Responses events in order with increasing sequence numbers, ending at response.completed', async () => {
    const { events: seen, error } = await events(provider.respondStream(ask('stream [mock:tokens=5]')));
    expect(error).toBeUndefined();
    expect(seen.map((e) => e.type)).toEqual([
      'response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added',
      ...Array.from({ length: 5 }, () => 'response.output_text.delta'),
      'response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed',
    ]);
    expect(seen.map((e) => e.sequence_number)).toEqual(seen.map((_, i) => i));
    const text = seen.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta as string).join('');
    expect(seen.find((e) => e.type === 'response.output_text.done')?.text).toBe(text);
    expect((seen.at(-1)!.response as { usage: { output_tokens: number } }).usage.output_tokens).toBe(5);
  });

  it('a stream the upstream cuts short is an error after the events it delivered', async () => {
    const { events: seen, error } = await events(provider.respondStream(ask('cut [mock:fail=after:6] [mock:tokens=10]')));
    expect(seen).toHaveLength(6);
    expect(error).toBeInstanceOf(UpstreamConnectionError);
  });

  it('an upstream that fails before the first event is an HTTP error', async () => {
    const { events: seen, error } = await events(provider.respondStream(ask('no [mock:fail=before]')));
    expect(seen).toEqual([]);
    expect(error).toBeInstanceOf(UpstreamHttpError);
    expect((error as UpstreamHttpError).status).toBe(500);
  });

  it('a stream that ends without its terminal event, or with an error event, is refused', async () => {
    const opening = `event: response.created\ndata: ${JSON.stringify({ type: 'response.created', sequence_number: 0, response: {} })}\n\n`;
    await withServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(opening);
    }, async (baseUrl) => {
      const result = await events(createOpenAICompatibleProvider({ baseUrl }).respondStream!({ model: 'm', input: 'x' }));
      expect(result.events).toHaveLength(1);
      expect(result.error).toBeInstanceOf(UpstreamProtocolError);
    });
    await withServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(`${opening}event: error\ndata: ${JSON.stringify({ type: 'error', code: 'server_error', message: 'overloaded', sequence_number: 1 })}\n\n`);
    }, async (baseUrl) => {
      const result = await events(createOpenAICompatibleProvider({ baseUrl }).respondStream!({ model: 'm', input: 'x' }));
      expect(result.events).toHaveLength(1);
      expect(result.error).toBeInstanceOf(UpstreamStreamError);
    });
  });

  it('sends a spliced stored body with the gateway output cap instead of the client one', async () => {
    const stored = Buffer.from(JSON.stringify({ model: 'gpt-4o-mini', input: 'hi', max_output_tokens: 999, stream: true, store: false }), 'utf8');
    const body = splicedUpstreamRequest(stored, new Set(['stream', 'max_output_tokens']), { max_output_tokens: 20 })!;
    const { pieces } = body.body({});
    expect(JSON.parse(Buffer.concat(pieces).toString('utf8'))).toEqual({ model: 'gpt-4o-mini', input: 'hi', store: false, max_output_tokens: 20 });
    await provider.respond(body);
    expect(mock.stats().lastRequest?.maxTokens).toBe(20);
    // A repeated member cannot be spliced safely.
    expect(splicedUpstreamRequest(Buffer.from('{"model":"a","model":"b","input":"x"}'), new Set(), {})).toBeUndefined();
  });
});
