/**
 * SSE parsing and writing (UpstreamCallStep's wire layer, docs/architecture.md, the lifecycle's UpstreamCallStep;
 * M6.1 needs every streamed chunk to arrive whole).
 */
import { Readable } from 'node:stream';
import {
  formatSseComment,
  formatSseEvent,
  parseSseEvents,
  SseLineTooLongError,
  type SseByteSource,
  type SseEvent,
} from '../../src/openai/sse';

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);

/** A web ReadableStream delivering exactly these byte chunks, like a fetch body. */
function webStream(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });
}

async function collect(source: SseByteSource): Promise<SseEvent[]> {
  const events: SseEvent[] = [];
  for await (const event of parseSseEvents(source)) events.push(event);
  return events;
}

/** Every way of cutting `text` in two pieces (byte-wise) gives the same events. */
async function eventsForEverySplit(text: string): Promise<SseEvent[][]> {
  const all = bytes(text);
  const results: SseEvent[][] = [];
  for (let cut = 0; cut <= all.length; cut += 1) {
    results.push(await collect(webStream([all.slice(0, cut), all.slice(cut)])));
  }
  return results;
}

describe('parseSseEvents', () => {
  it('parses OpenAI-style data events and the [DONE] terminator', async () => {
    const events = await collect(webStream([bytes('data: {"a":1}\n\ndata: {"a":2}\n\ndata: [DONE]\n\n')]));
    expect(events).toEqual([
      { event: 'message', data: '{"a":1}' },
      { event: 'message', data: '{"a":2}' },
      { event: 'message', data: '[DONE]' },
    ]);
  });

  it('reassembles events split at every possible byte boundary, CRLF pairs included', async () => {
    const text = 'data: {"x":"héllo"}\r\n\r\nevent: ping\r\ndata: two\r\n\r\n';
    const expected = [
      { event: 'message', data: '{"x":"héllo"}' },
      { event: 'ping', data: 'two' },
    ];
    const results = await eventsForEverySplit(text);
    expect(results).toHaveLength(bytes(text).length + 1);
    for (const events of results) expect(events).toEqual(expected);
  });

  it('handles one byte per chunk (multi-byte UTF-8 characters split across chunks)', async () => {
    const text = 'data: 计费 ✓\n\n';
    const all = bytes(text);
    const oneByteChunks = Array.from(all, (b) => Uint8Array.of(b));
    expect(await collect(webStream(oneByteChunks))).toEqual([{ event: 'message', data: '计费 ✓' }]);
  });

  it('accepts LF, CRLF and lone CR line ends in one stream', async () => {
    const events = await collect(webStream([bytes('data: a\n\ndata: b\r\n\r\ndata: c\r\rdata: d\n\n')]));
    expect(events.map((e) => e.data)).toEqual(['a', 'b', 'c', 'd']);
  });

  it('joins multi-line data with newlines and strips only one leading space', async () => {
    const events = await collect(webStream([bytes('data: line one\ndata:line two\ndata:   indented\n\n')]));
    expect(events).toEqual([{ event: 'message', data: 'line one\nline two\n  indented' }]);
  });

  it('ignores comments, unknown fields and blank lines without data', async () => {
    const events = await collect(webStream([bytes(': keep-alive\n\n: another\nfoo: bar\n\n\n\ndata: real\n\n')]));
    expect(events).toEqual([{ event: 'message', data: 'real' }]);
  });

  it('keeps id (sticky across events) and retry fields', async () => {
    const events = await collect(webStream([bytes('id: 7\nretry: 1500\ndata: a\n\ndata: b\n\nretry: x\ndata: c\n\n')]));
    expect(events).toEqual([
      { event: 'message', data: 'a', id: '7', retry: 1500 },
      { event: 'message', data: 'b', id: '7' },
      { event: 'message', data: 'c', id: '7' },
    ]);
  });

  it('dispatches an event still pending at end of stream (no trailing blank line)', async () => {
    expect(await collect(webStream([bytes('data: first\n\ndata: [DONE]')]))).toEqual([
      { event: 'message', data: 'first' },
      { event: 'message', data: '[DONE]' },
    ]);
    // A trailing CR at the very end is a line end, not the start of a CRLF.
    expect(await collect(webStream([bytes('data: x\r')]))).toEqual([{ event: 'message', data: 'x' }]);
  });

  it('reads Node streams of Buffers and strings too', async () => {
    const node = Readable.from([Buffer.from('data: {"n"'), ':1}\n', Buffer.from('\ndata: [DONE]\n\n')]);
    expect(await collect(node)).toEqual([
      { event: 'message', data: '{"n":1}' },
      { event: 'message', data: '[DONE]' },
    ]);
  });

  it('cancels the source when the consumer stops early', async () => {
    let cancelled = false;
    const source = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.enqueue(bytes('data: tick\n\n'));
      },
      cancel() {
        cancelled = true;
      },
    });
    let seen = 0;
    for await (const event of parseSseEvents(source)) {
      expect(event.data).toBe('tick');
      seen += 1;
      if (seen === 3) break;
    }
    expect(seen).toBe(3);
    expect(cancelled).toBe(true);
  });

  it('throws SseLineTooLongError when a line exceeds the limit', async () => {
    const source = webStream([bytes('data: '), bytes('x'.repeat(100))]);
    const seen: string[] = [];
    const drain = async (): Promise<void> => {
      for await (const event of parseSseEvents(source, { maxLineChars: 50 })) seen.push(event.data);
    };
    await expect(drain()).rejects.toThrow(SseLineTooLongError);
    expect(seen).toEqual([]);
  });
});

describe('formatSseEvent / formatSseComment', () => {
  it('writes JSON data events and the [DONE] terminator', () => {
    expect(formatSseEvent({ a: 'multi\nline' })).toBe('data: {"a":"multi\\nline"}\n\n');
    expect(formatSseEvent('[DONE]')).toBe('data: [DONE]\n\n');
    expect(formatSseEvent('plain')).toBe('data: "plain"\n\n');
    expect(() => formatSseEvent(undefined)).toThrow(TypeError);
  });

  it('round-trips through the parser', async () => {
    const payloads = [{ id: 1, text: 'a\r\nb' }, { id: 2, text: ': not a comment' }];
    const wire = payloads.map((p) => formatSseEvent(p)).join('') + formatSseComment('ping') + formatSseEvent('[DONE]');
    const events = await collect(webStream([bytes(wire)]));
    expect(events.map((e) => e.data)).toEqual([...payloads.map((p) => JSON.stringify(p)), '[DONE]']);
  });

  it('writes comments line by line', () => {
    expect(formatSseComment('ping')).toBe(': ping\n\n');
    expect(formatSseComment('a\nb')).toBe(': a\n: b\n\n');
    expect(formatSseComment()).toBe(':\n\n');
  });
});
