/**
 * Writes a Responses API request's relayed output (issue 11) to the HTTP client exactly as
 * the upstream sent it: the Response object as one JSON body, or every stream event as the
 * SSE event its `type` names (`event: response.output_text.delta` + its `data:`), usage
 * included as it came in `response.completed`. The Responses API ends a stream after its
 * terminal event, without `data: [DONE]`. A stream cut short (the upstream broke off, the
 * worker gave up) ends with an `error` event in the Responses API's own shape.
 */
import type { Response } from 'express';
import { responseUsage, RESPONSES_TERMINAL_EVENTS } from '../openai/responses';
import type { RelayEntry } from '../redis/request-relay';
import { UpstreamError } from './errors';
import { eventStreamResponse } from './event-stream-response';

/** One Responses SSE event: its name is its `type`, as OpenAI sends them. */
function formatResponsesEvent(event: unknown): string {
  const type = (event as { type?: unknown } | null)?.type;
  const json = JSON.stringify(event);
  return typeof type === 'string' && /^[\w.]+$/.test(type) ? `event: ${type}\ndata: ${json}\n\n` : `data: ${json}\n\n`;
}

/** Relays a Responses answer; returns its billed token count when it carried one (the edge settles tokens per minute with it). */
export async function writeRelayedResponses(res: Response, entries: AsyncIterable<RelayEntry> | Iterable<RelayEntry>): Promise<{ totalTokens?: number }> {
  let totalTokens: number | undefined;
  let sequence = 0;
  const stream = eventStreamResponse(res);
  for await (const entry of entries) {
    if (res.destroyed) return { totalTokens };
    switch (entry.type) {
      case 'response':
        res.status(200).json(entry.data);
        return { totalTokens: responseUsage(entry.data)?.total_tokens };
      case 'chunk': {
        stream.start();
        const event = entry.data as { type?: unknown; sequence_number?: unknown; response?: unknown };
        if (typeof event.sequence_number === 'number') sequence = event.sequence_number + 1;
        if (typeof event.type === 'string' && RESPONSES_TERMINAL_EVENTS.has(event.type)) totalTokens = responseUsage(event.response)?.total_tokens;
        res.write(formatResponsesEvent(entry.data));
        break;
      }
      case 'usage':
        break; // never relayed for this operation: the usage travels in response.completed
      case 'error':
        if (!stream.started) throw new UpstreamError(entry.data.message);
        res.end(formatResponsesEvent({ type: 'error', code: entry.data.code, message: entry.data.message, param: null, sequence_number: sequence }));
        return { totalTokens };
      case 'done':
        stream.start();
        res.end();
        return { totalTokens };
    }
  }
  if (!res.headersSent) throw new UpstreamError('The upstream call ended without output.');
  res.end();
  return { totalTokens };
}
