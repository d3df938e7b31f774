/**
 * What a request delivered, read back from its relay stream. A retried upstream
 * attempt (after a worker crash) and a settlement whose upstream step failed use
 * it to bill exactly what reached the client, and to end the client's stream.
 */
import { StreamTokenAccumulator, type FinalTokenUsage } from '../billing/stream-token-accumulator';
import type { RelayEntry, RequestRelay } from '../redis/request-relay';
import { BilledOperation, operationOf, type BilledRequestInput, type UpstreamOutcome } from '../workflows/definitions';
import { addEmbeddingsResponse, addResponsesEvent, addResponsesResponse } from '../billing/operation-usage';

/** Every relayed upstream failure is a 502 `upstream_error`; only the message tells which. */
export function upstreamFailure(message: string): { status: 502; message: string; type: 'upstream_error'; code: 'upstream_error' } {
  return { status: 502, message, type: 'upstream_error', code: 'upstream_error' };
}

/** The error relayed when the upstream call broke off after output reached the client. */
export const INTERRUPTED_ERROR = upstreamFailure('upstream call was interrupted');
/** The error relayed when the client went away; nobody reads it but duplicate readers. */
export const CLIENT_CLOSED_ERROR = { status: 499, message: 'client closed the request', type: 'invalid_request_error', code: 'client_closed_request' } as const;

/** The error relayed when the upstream call failed for good before any output. */
export const UPSTREAM_FAILED_ERROR = upstreamFailure('upstream call failed');

/**
 * Ends the client's stream when nothing ended it yet: an interruption error after
 * output, `UPSTREAM_FAILED_ERROR` before any.
 */
export async function endRelayIfOpen(relay: Pick<RequestRelay, 'writer'>, input: BilledRequestInput, entries: readonly RelayEntry[]): Promise<void> {
  if (terminalOf(entries)) return;
  const writer = relay.writer(input.tenantId, input.requestId);
  writer.push({ type: 'error', data: hasOutput(entries) ? { ...INTERRUPTED_ERROR } : { ...UPSTREAM_FAILED_ERROR } });
  await writer.flush();
}

export function hasOutput(entries: readonly RelayEntry[]): boolean {
  return entries.some((e) => e.type === 'chunk' || e.type === 'response');
}

export function terminalOf(entries: readonly RelayEntry[]): RelayEntry | undefined {
  return entries.find((e) => e.type === 'done' || e.type === 'error');
}

/** Worst case for the estimate level: the whole output cap. */
export function usageEstimate(input: BilledRequestInput): { promptTokens: number; completionTokens: number } {
  return { promptTokens: input.promptTokens, completionTokens: input.maxOutputTokens };
}

interface RelayedCompletion {
  choices?: Array<{ message?: { content?: string | null } | null }>;
  usage?: unknown;
}

/** Counts what the relay holds with the accumulator's priority levels (upstream usage, else tiktoken). */
export function usageFromRelay(input: BilledRequestInput, entries: readonly RelayEntry[]): FinalTokenUsage {
  const acc = new StreamTokenAccumulator({ model: input.model, promptTokens: input.promptTokens });
  const operation = operationOf(input);
  for (const entry of entries) {
    // Embeddings and Responses output (issue 11) is relayed as the upstream sent it: read it as UpstreamCallStep did.
    if (operation === BilledOperation.responses && entry.type === 'chunk') addResponsesEvent(acc, entry.data);
    else if (operation === BilledOperation.responses && entry.type === 'response') addResponsesResponse(acc, entry.data);
    else if (operation === BilledOperation.embeddings && entry.type === 'response') addEmbeddingsResponse(acc, entry.data);
    else if (entry.type === 'chunk') acc.add(entry.data as Parameters<StreamTokenAccumulator['add']>[0]);
    else if (entry.type === 'usage') acc.add({ choices: [], usage: entry.data });
    else if (entry.type === 'response') {
      const completion = entry.data as RelayedCompletion;
      for (const choice of completion.choices ?? []) acc.addText(choice.message?.content ?? '');
      acc.add({ choices: [], usage: completion.usage as { prompt_tokens?: unknown; completion_tokens?: unknown } | null });
    }
  }
  return acc.finalize(usageEstimate(input));
}

/** The outcome a finished or interrupted relay stands for. */
export function outcomeFromRelay(input: BilledRequestInput, channel: string, entries: readonly RelayEntry[]): UpstreamOutcome {
  const usage = usageFromRelay(input, entries);
  const terminal = terminalOf(entries);
  const base = { promptTokens: usage.promptTokens, completionTokens: usage.completionTokens, tokenSource: usage.source, channel };
  // An error before any output (the client left first, the upstream refused): the attempt that wrote it
  // returned failed_before_output (a void); a retry reading the relay must decide the same.
  if (terminal?.type === 'error' && !hasOutput(entries)) return { ...base, status: 'failed_before_output', error: terminal.data };
  if (terminal?.type === 'done') return { ...base, status: 'completed' };
  if (terminal?.type === 'error' && terminal.data.status === CLIENT_CLOSED_ERROR.status) return { ...base, status: 'client_cancelled' };
  return { ...base, status: 'failed_after_output', error: terminal?.type === 'error' ? terminal.data : { ...INTERRUPTED_ERROR } };
}
