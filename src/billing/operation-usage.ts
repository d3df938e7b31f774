/**
 * How the upstream output of each non-chat operation (issue 11) feeds the
 * StreamTokenAccumulator (M6): the one place where embeddings and Responses usage enter
 * billing, always already in the chat-completions usage shape (src/openai/embeddings.ts,
 * src/openai/responses-usage.ts), so the accumulator's priority levels apply unchanged:
 * the upstream's usage when reported, else tiktoken's count of the delivered text.
 *
 * Used by UpstreamCallStep while it relays, and by the relay recovery (a retried attempt,
 * a settlement after a failed step) on what the relay holds: both bill the same figures.
 */
import { embeddingsUsageAsChatUsage } from '../openai/embeddings';
import { responseOutputTexts, responseUsage, responsesEventAsChunk, type ResponsesStreamEvent } from '../openai/responses';
import type { StreamTokenAccumulator } from './stream-token-accumulator';

/** An embeddings answer: input tokens only. Without a usage the accumulator's count is the estimate's prompt and no output. */
export function addEmbeddingsResponse(acc: StreamTokenAccumulator, response: unknown): void {
  const usage = embeddingsUsageAsChatUsage((response as { usage?: unknown } | null)?.usage);
  if (usage) acc.add({ choices: [], usage });
}

/** A Responses object (the JSON answer): its output text, and its usage when it has one. */
export function addResponsesResponse(acc: StreamTokenAccumulator, response: unknown): void {
  for (const text of responseOutputTexts(response)) acc.addText(text);
  const usage = responseUsage(response);
  if (usage) acc.add({ choices: [], usage });
}

/** One Responses stream event: a text delta adds delivered text, a terminal event its usage. */
export function addResponsesEvent(acc: StreamTokenAccumulator, event: unknown): void {
  if (typeof event !== 'object' || event === null || typeof (event as { type?: unknown }).type !== 'string') return;
  const chunk = responsesEventAsChunk(event as ResponsesStreamEvent);
  if (chunk) acc.add(chunk);
}
