/**
 * Test helpers for the upstream tests: an independent tiktoken count (so the
 * mock's own counting is checked, not reused), raw HTTP/SSE reading, polling.
 */
import { get_encoding } from 'tiktoken';
import { parseSseEvents } from '../../src/openai/sse';

const encoder = get_encoding('cl100k_base');
afterAll(() => encoder.free());

/** cl100k_base tokens of `text`, counted here, not by the code under test. */
export function cl100k(text: string): number {
  return encoder.encode(text).length;
}

/** The mock's documented prompt formula: 3 + Σ (4 + tokens(content)). */
export function expectedPromptTokens(contents: string[]): number {
  return 3 + contents.reduce((sum, content) => sum + 4 + cl100k(content), 0);
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
