/**
 * Server-sent events, both directions.
 *
 * The parser follows the WHATWG event-stream rules (LF, CRLF or lone CR line
 * ends; `:` comments; multi-line `data`; one optional space after the colon) and
 * keeps a carry-over buffer because network chunks split events, lines, CRLF
 * pairs and even UTF-8 characters anywhere.
 *
 * One deliberate leniency: an event still pending when the stream ends (no final
 * blank line) is dispatched instead of dropped, so a truncated last line surfaces
 * as a visible parse error upstream rather than silently vanishing.
 */

/** The data of the event that ends an OpenAI stream. */
export const SSE_DONE = '[DONE]';

export interface SseEvent {
  /** The `event:` field, `message` when absent. */
  event: string;
  /** All `data:` lines of the event joined by `\n`. */
  data: string;
  /** The last `id:` seen on the stream so far, if any. */
  id?: string;
  /** A `retry:` value carried by this event, if any. */
  retry?: number;
}

/** Bytes from fetch (web stream) or from a Node stream / any async source. */
export type SseByteSource = ReadableStream<Uint8Array> | AsyncIterable<Uint8Array | string>;

export interface SseParseOptions {
  /**
   * Upper bound of characters buffered without a line end; protects memory from
   * an upstream that never sends a newline.
   * @default 4 MiB
   */
  maxLineChars?: number;
}

/** Thrown when an SSE line grows past `maxLineChars` without a line end. */
export class SseLineTooLongError extends Error {
  override name = 'SseLineTooLongError';
  constructor(readonly limit: number) {
    super(`SSE line longer than ${limit} characters`);
  }
}

const DEFAULT_MAX_LINE_CHARS = 4 * 1024 * 1024;

/** Accumulates fields until a blank line dispatches them. */
class PendingEvent {
  private eventName = '';
  private dataLines: string[] = [];
  private retry: number | undefined;
  lastEventId: string | undefined;

  get hasData(): boolean {
    return this.dataLines.length > 0;
  }

  applyLine(line: string): void {
    if (line.startsWith(':')) return; // comment (often a keep-alive ping)
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data':
        this.dataLines.push(value);
        break;
      case 'event':
        this.eventName = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // unknown fields are ignored by the spec
    }
  }

  /** The finished event, or undefined when it carried no data (spec: not dispatched). */
  take(): SseEvent | undefined {
    const event: SseEvent | undefined = this.hasData
      ? {
          event: this.eventName || 'message',
          data: this.dataLines.join('\n'),
          ...(this.lastEventId !== undefined ? { id: this.lastEventId } : {}),
          ...(this.retry !== undefined ? { retry: this.retry } : {}),
        }
      : undefined;
    this.eventName = '';
    this.dataLines = [];
    this.retry = undefined;
    return event;
  }
}

/**
 * Parses a byte stream into SSE events. Stopping the iteration early cancels
 * the source (for a fetch body: releases the HTTP connection).
 */
export async function* parseSseEvents(
  source: SseByteSource,
  options: SseParseOptions = {},
): AsyncGenerator<SseEvent, void, undefined> {
  const maxLineChars = options.maxLineChars ?? DEFAULT_MAX_LINE_CHARS;
  // stream: true keeps a UTF-8 sequence split across chunks for the next decode.
  const decoder = new TextDecoder('utf-8');
  const pending = new PendingEvent();
  // Per parser: a shared global regex would share lastIndex between streams.
  const lineEnd = /\r\n|\r|\n/g;
  let buffer = '';

  // Consumes every complete line of the buffer; yields the events they finish.
  function* drainLines(atEnd: boolean): Generator<SseEvent> {
    let consumed = 0;
    lineEnd.lastIndex = 0;
    for (let match = lineEnd.exec(buffer); match !== null; match = lineEnd.exec(buffer)) {
      // A CR at the very end may be the first half of a CRLF split across chunks.
      if (!atEnd && match[0] === '\r' && match.index === buffer.length - 1) break;
      const line = buffer.slice(consumed, match.index);
      consumed = match.index + match[0].length;
      if (line === '') {
        const event = pending.take();
        if (event) yield event;
      } else {
        pending.applyLine(line);
      }
    }
    buffer = buffer.slice(consumed);
    if (buffer.length > maxLineChars) throw new SseLineTooLongError(maxLineChars);
  }

  for await (const piece of source) {
    buffer += typeof piece === 'string' ? piece : decoder.decode(piece, { stream: true });
    yield* drainLines(false);
  }
  buffer += decoder.decode();
  yield* drainLines(true);
  if (buffer !== '') pending.applyLine(buffer);
  buffer = '';
  const last = pending.take();
  if (last) yield last;
}

/**
 * One SSE event carrying `data` as JSON, or the literal `[DONE]` terminator.
 * JSON.stringify never emits raw newlines, so one `data:` line always suffices.
 */
export function formatSseEvent(data: unknown): string {
  if (data === SSE_DONE) return `data: ${SSE_DONE}\n\n`;
  const json = JSON.stringify(data);
  if (json === undefined) throw new TypeError('formatSseEvent: data is not JSON-serialisable');
  return `data: ${json}\n\n`;
}

/** An SSE comment (ignored by clients): keeps idle connections and proxies alive. */
export function formatSseComment(text = ''): string {
  return `${text
    .split(/\r\n|\r|\n/)
    .map((line) => `: ${line}`.trimEnd())
    .join('\n')}\n\n`;
}
