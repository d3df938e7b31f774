/**
 * The victim of the isolation benchmark: a tenant with plenty of quota sending tiny non-streaming
 * chat completions in closed loops (each loop sends its next request when the previous answered)
 * for a fixed time. At the deadline the loops stop sending and wait for their last answer, so
 * nothing is cut off mid-flight. Billed requests/s = 2xx responses / time to the last answer.
 */
import { performance } from 'node:perf_hooks';
import { summarise, type LatencySummary } from '../gateway/statistics';
import { REQUEST_TIMEOUT_S, TINY_CHAT_BODY } from './options';

export interface VictimFigures {
  connections: number;
  sent: number;
  ok2xx: number;
  statusCodes: Record<string, number>;
  errors: number;
  durationS: number;
  okPerSecond: number;
  /** Of the 2xx responses. */
  latency: LatencySummary;
}

export async function runVictim(chatUrl: string, apiKey: string, connections: number, durationS: number): Promise<VictimFigures> {
  const body = JSON.stringify(TINY_CHAT_BODY);
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` };
  const ok: number[] = [];
  const statusCodes: Record<string, number> = {};
  let sent = 0;
  let errors = 0;
  const t0 = performance.now();
  const deadline = t0 + durationS * 1000;
  let last = t0;
  const loop = async (): Promise<void> => {
    while (performance.now() < deadline) {
      sent += 1;
      const s = performance.now();
      try {
        const res = await fetch(chatUrl, { method: 'POST', headers, body, signal: AbortSignal.timeout(REQUEST_TIMEOUT_S * 1000) });
        await res.arrayBuffer();
        last = performance.now();
        statusCodes[String(res.status)] = (statusCodes[String(res.status)] ?? 0) + 1;
        if (res.status >= 200 && res.status < 300) ok.push(last - s);
      } catch {
        errors += 1;
        last = performance.now();
      }
    }
  };
  await Promise.all(Array.from({ length: connections }, loop));
  const elapsedS = (last - t0) / 1000;
  return { connections, sent, ok2xx: ok.length, statusCodes, errors, durationS: elapsedS, okPerSecond: elapsedS > 0 ? ok.length / elapsedS : 0, latency: summarise(ok) };
}
