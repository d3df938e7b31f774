/**
 * Writes a billed request's relayed output to the HTTP client: one JSON body for a
 * plain request, server-sent events for a stream (ending with `data: [DONE]`). The
 * usage chunk is the gateway's own (the billed figures), sent only when the client
 * asked for it with `stream_options.include_usage`. An embeddings answer is one JSON body
 * too; the Responses API's output is written by ./relay-responses.ts.
 */
import type { Response } from 'express';
import { formatSseEvent, SSE_DONE } from '../openai/sse';
import type { RelayEntry } from '../redis/request-relay';
import { BilledOperation, operationOf, type BilledRequestInput } from '../workflows/definitions';
import { embeddingsUsageAsChatUsage } from '../openai/embeddings';
import { UpstreamError } from './errors';
import { writeRelayedResponses } from './relay-responses';
import { eventStreamResponse } from './event-stream-response';

/** Token usage of a relayed answer, as the gateway billed it. */
interface RelayedUsage {
  prompt_tokens?: unknown;
  completion_tokens?: unknown;
}

function totalTokens(usage: RelayedUsage | undefined): number | undefined {
  if (!usage) return undefined;
  const total = Number(usage.prompt_tokens) + Number(usage.completion_tokens);
  return Number.isSafeInteger(total) && total >= 0 ? total : undefined;
}

/**
 * Relays `entries` until a terminal entry; an upstream failure before any output throws
 * (502 through errorMiddleware). Returns the billed token count it relayed, when the
 * answer carried one (the edge settles a tokens-per-minute share with it).
 */
export async function writeRelayedResponse(
  res: Response,
  input: Pick<BilledRequestInput, 'model' | 'includeUsage' | 'operation'>,
  entries: AsyncIterable<RelayEntry> | Iterable<RelayEntry>,
): Promise<{ totalTokens?: number }> {
  if (operationOf(input) === BilledOperation.responses) return writeRelayedResponses(res, entries);
  let usage: RelayedUsage | undefined;
  let last: { id?: unknown; created?: unknown; model?: unknown } = {};
  const stream = eventStreamResponse(res);
  for await (const entry of entries) {
    if (res.destroyed) return { totalTokens: totalTokens(usage) };
    switch (entry.type) {
      case 'response':
        res.status(200).json(entry.data);
        // An embeddings answer has no completion side: its total is its input.
        return { totalTokens: totalTokens((entry.data as { usage?: RelayedUsage }).usage) ?? embeddingsUsageAsChatUsage((entry.data as { usage?: unknown }).usage)?.total_tokens };
      case 'chunk':
        stream.start();
        last = entry.data as typeof last;
        res.write(formatSseEvent(entry.data));
        break;
      case 'usage':
        usage = entry.data;
        if (input.includeUsage) {
          stream.start();
          res.write(formatSseEvent({ id: last.id, object: 'chat.completion.chunk', created: last.created, model: last.model ?? input.model, choices: [], usage: entry.data }));
        }
        break;
      case 'error':
        if (!stream.started) throw new UpstreamError(entry.data.message);
        res.write(formatSseEvent({ error: { message: entry.data.message, type: entry.data.type, code: entry.data.code } }));
        res.end(formatSseEvent(SSE_DONE));
        return { totalTokens: totalTokens(usage) };
      case 'done':
        stream.start();
        res.end(formatSseEvent(SSE_DONE));
        return { totalTokens: totalTokens(usage) };
    }
  }
  if (!res.headersSent) throw new UpstreamError('The upstream call ended without output.');
  res.end();
  return { totalTokens: totalTokens(usage) };
}
