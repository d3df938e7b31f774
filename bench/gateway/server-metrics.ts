/**
 * The gateway's own view of a phase, from its API's Prometheus `/metrics`: where a request's
 * time goes on the server (admission, upstream call, settlement, the API's HTTP handling) and
 * how late its event loop ran. Client-side latency alone cannot say whether the time was spent
 * in billing or in queueing, so each gateway phase is bracketed by two scrapes and reported as
 * their difference.
 */
import { histogramDelta, parseHistogram, type Buckets, type HistogramSummary } from './statistics';

/** The server-side histograms that say where a request's time goes. */
export const SERVER_HISTOGRAMS = {
  admission: { name: 'billing_admission_duration_seconds' },
  upstream: { name: 'billing_upstream_duration_seconds' },
  settlement: { name: 'billing_settlement_duration_seconds' },
  apiHttp: { name: 'http_request_duration_seconds', keep: (labels: string) => labels.includes('route="/v1/chat/completions"') },
} as const satisfies Record<string, { name: string; keep?: (labels: string) => boolean }>;
export type ServerHistogram = keyof typeof SERVER_HISTOGRAMS;

/**
 * Event-loop delay of the gateway process; prom-client resets its monitor at every scrape, so a scrape reports the
 * window since the previous one. Its monitor samples every 10 ms and reports that interval too: an idle loop reads ~10 ms.
 */
export interface EventLoopDelay { p50Ms: number; p99Ms: number; maxMs: number }
export interface Scrape { histograms: Record<ServerHistogram, Buckets>; eventLoop: EventLoopDelay }
export type ServerFigures = Record<ServerHistogram, HistogramSummary> & { eventLoop: EventLoopDelay };

function gaugeMs(text: string, name: string): number {
  const match = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return match?.[1] === undefined ? NaN : Number(match[1]) * 1000;
}

export async function scrape(apiUrl: string): Promise<Scrape> {
  const text = await (await fetch(`${apiUrl}/metrics`)).text();
  const entries = Object.entries(SERVER_HISTOGRAMS).map(([k, h]) => [k, parseHistogram(text, h.name, 'keep' in h ? h.keep : undefined)]);
  return {
    histograms: Object.fromEntries(entries) as Record<ServerHistogram, Buckets>,
    eventLoop: {
      p50Ms: gaugeMs(text, 'nodejs_eventloop_lag_p50_seconds'),
      p99Ms: gaugeMs(text, 'nodejs_eventloop_lag_p99_seconds'),
      maxMs: gaugeMs(text, 'nodejs_eventloop_lag_max_seconds'),
    },
  };
}

/** What happened between two scrapes; the event-loop figures are the "after" scrape's, which covers exactly the window. */
export function serverDelta(before: Scrape, after: Scrape): ServerFigures {
  const keys = Object.keys(SERVER_HISTOGRAMS) as ServerHistogram[];
  const histograms = Object.fromEntries(keys.map((k) => [k, histogramDelta(before.histograms[k], after.histograms[k])])) as Record<ServerHistogram, HistogramSummary>;
  return { ...histograms, eventLoop: after.eventLoop };
}
