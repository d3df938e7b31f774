/**
 * Test helpers for the upstream tests: an independent tiktoken count of
 * completion text (so the mock's reply length is checked, not reused), raw
 * HTTP/SSE reading, stream draining, a throwaway HTTP server, polling. The
 * mock's prompt usage is by design the gateway's own `countPromptTokens`, which
 * the tests call directly.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { get_encoding } from 'tiktoken';
import type { ChatCompletionChunk } from '../../src/openai/chat-response';
import { parseSseEvents } from '../../src/openai/sse';

const encoder = get_encoding('cl100k_base');
afterAll(() => encoder.free());

/** cl100k_base tokens of `text`, counted here, not by the code under test. */
export function cl100k(text: string): number {
  return encoder.encode(text).length;
}

export async function postChat(
  baseUrl: string,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
  signal?: AbortSignal,
): Promise<Response> {
  return fetch(`${baseUrl}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
    ...(signal ? { signal } : {}),
  });
}

/** The `data:` payloads of an SSE response, in order, `[DONE]` included. */
export async function sseData(res: Response): Promise<string[]> {
  if (!res.body) throw new Error('response has no body');
  const data: string[] = [];
  for await (const event of parseSseEvents(res.body)) data.push(event.data);
  return data;
}

/** Collects the chunks a stream yields and the error it ends with, if any. */
export async function drain(stream: AsyncIterable<ChatCompletionChunk>): Promise<{ chunks: ChatCompletionChunk[]; error?: unknown }> {
  const chunks: ChatCompletionChunk[] = [];
  try {
    for await (const chunk of stream) chunks.push(chunk);
    return { chunks };
  } catch (error) {
    return { chunks, error };
  }
}

/** A throwaway HTTP server answering every request with `handler`, for upstream misbehaviour the mock does not offer. */
export async function withServer(handler: http.RequestListener, test: (baseUrl: string) => Promise<void>): Promise<void> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    await test(`http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`);
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

/** Polls `check` until it returns true; fails the test after `timeoutMs`. */
export async function waitFor(check: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export function userMessage(content: string): { role: 'user'; content: string } {
  return { role: 'user', content };
}
