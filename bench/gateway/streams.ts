/**
 * Streaming load: `stream: true` chat completions issued by a fixed number of fetch + reader
 * loops, so the client sees the bytes as they arrive (autocannon only times whole responses).
 * TTFB is the time to the first body chunk: the gateway sends its headers with the first chunk,
 * so this is the first token a client sees. A stream that does not end with `data: [DONE]`
 * counts as incomplete, a failure like a non-2xx.
 */
import { performance } from 'node:perf_hooks';
import { REQUEST_TIMEOUT_S, STREAM_BODY } from './options';
import { summarise, type LatencySummary } from './statistics';

export interface StreamFigures { target: 'gateway' | 'direct'; requests: number; ok2xx: number; non2xx: number; errors: number; incomplete: number; ttfb: LatencySummary; total: LatencySummary }

/** `total` streamed requests through `concurrency` loops; TTFB = first body chunk (the gateway sends its headers with it). */
export async function runStreams(target: StreamFigures['target'], url: string, headers: Record<string, string>, total: number, concurrency: number): Promise<StreamFigures> {
  const figures: StreamFigures = { target, requests: total, ok2xx: 0, non2xx: 0, errors: 0, incomplete: 0, ttfb: summarise([]), total: summarise([]) };
  const ttfb: number[] = [];
  const whole: number[] = [];
  let issued = 0;
  const loop = async (): Promise<void> => {
    while (issued < total) {
      issued += 1;
      const t0 = performance.now();
      try {
        const res = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...headers },
          body: JSON.stringify(STREAM_BODY),
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_S * 1000),
        });
        if (!res.ok || !res.body) {
          figures.non2xx += 1;
          await res.body?.cancel();
          continue;
        }
        figures.ok2xx += 1;
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let first: number | undefined;
        let text = '';
        for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
          first ??= performance.now();
          text += decoder.decode(chunk.value as Uint8Array, { stream: true });
        }
        if (first !== undefined) ttfb.push(first - t0);
        whole.push(performance.now() - t0);
        if (!text.includes('data: [DONE]')) figures.incomplete += 1;
      } catch {
        figures.errors += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  return { ...figures, ttfb: summarise(ttfb), total: summarise(whole) };
}
