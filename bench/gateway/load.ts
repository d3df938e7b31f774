/**
 * Non-streaming load with autocannon: `POST /v1/chat/completions` at a fixed number of
 * connections, either straight at the mock upstream (the baseline) or through the gateway.
 * A direct run is time-bounded; a gateway run is request-count bounded, because autocannon
 * destroys in-flight requests at a deadline and the gateway would still bill them, which would
 * break the "committed ledger rows == 2xx responses" check. Latencies are the 2xx responses'.
 */
import { performance } from 'node:perf_hooks';
import { inspect } from 'node:util';
import autocannon from 'autocannon';
import { CHAT_BODY, REQUEST_TIMEOUT_S } from './options';
import { summarise, type LatencySummary } from './statistics';

export interface LoadFigures {
  target: 'gateway' | 'direct';
  connections: number;
  sent: number;
  ok2xx: number;
  non2xx: number;
  statusCodes: Record<string, number>;
  errors: number;
  timeouts: number;
  /** Requests destroyed by the hard cap while in flight (0 unless the run overran). */
  abortedInFlight: number;
  durationS: number;
  okPerSecond: number;
  latency: LatencySummary;
}

/** What ends a run: a request count (gateway) or a duration (direct). */
export type LoadBound = { amount: number } | { durationS: number };

export type LoadRun = { target: LoadFigures['target']; url: string; headers: Record<string, string>; connections: number; capS: number } & LoadBound;

/** One autocannon run: bounded by `amount` (gateway) or by `durationS` (direct), hard-capped at `capS`. */
export function runLoad(opts: LoadRun): Promise<LoadFigures> {
  const okLatencies: number[] = [];
  const started = performance.now();
  let lastResponseAt = started;
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: opts.url,
        method: 'POST',
        headers: { 'content-type': 'application/json', ...opts.headers },
        body: JSON.stringify(CHAT_BODY),
        connections: opts.connections,
        timeout: REQUEST_TIMEOUT_S,
        ...('amount' in opts ? { amount: opts.amount } : { duration: opts.durationS }),
      },
      (err: unknown, result: autocannon.Result) => {
        clearTimeout(cap);
        if (err) return reject(err instanceof Error ? err : new Error(inspect(err)));
        const completed = result['1xx'] + result['2xx'] + result['3xx'] + result['4xx'] + result['5xx'];
        const statusCodes = Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([code, s]) => [code, s.count ?? 0]));
        const durationS = (lastResponseAt - started) / 1000;
        resolve({
          target: opts.target,
          connections: opts.connections,
          sent: result.requests.sent,
          ok2xx: result['2xx'],
          non2xx: result.non2xx,
          statusCodes,
          errors: result.errors,
          timeouts: result.timeouts,
          abortedInFlight: Math.max(0, result.requests.sent - completed - result.errors),
          durationS,
          okPerSecond: result['2xx'] / durationS,
          latency: summarise(okLatencies),
        });
      },
    );
    instance.on('response', (_client, status, _bytes, ms) => {
      lastResponseAt = performance.now();
      if (status >= 200 && status < 300) okLatencies.push(ms);
    });
    const cap = setTimeout(() => instance.stop(), opts.capS * 1000);
  });
}
