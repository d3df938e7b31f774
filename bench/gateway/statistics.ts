/**
 * The arithmetic behind every latency figure of the gateway benchmark: percentiles of raw
 * samples (client-side latencies, Temporal history spans) and quantiles of Prometheus histogram
 * buckets (server-side figures). The server only exports cumulative buckets, so a phase's
 * quantile comes from the difference of two scrapes, interpolated inside a bucket the way
 * PromQL's `histogram_quantile` does; the bucket bound is kept so a reader sees its resolution.
 */

export interface LatencySummary { count: number; p50Ms: number; p90Ms: number; p99Ms: number; maxMs: number }

/** Nearest-rank percentile of an ascending array; NaN when it is empty. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
}

export function summarise(samplesMs: number[]): LatencySummary {
  const sorted = [...samplesMs].sort((a, b) => a - b);
  return { count: sorted.length, p50Ms: percentile(sorted, 50), p90Ms: percentile(sorted, 90), p99Ms: percentile(sorted, 99), maxMs: sorted.at(-1) ?? NaN };
}

/** Cumulative bucket counts by upper bound (seconds), summed over every label set that `keep` accepts. */
export type Buckets = Map<number, number>;

export function parseHistogram(text: string, name: string, keep: (labels: string) => boolean = () => true): Buckets {
  const buckets: Buckets = new Map();
  const prefix = `${name}_bucket{`;
  for (const line of text.split('\n')) {
    if (!line.startsWith(prefix)) continue;
    const close = line.lastIndexOf('}');
    const labels = line.slice(prefix.length, close);
    const le = /(?:^|,)le="([^"]+)"/.exec(labels)?.[1];
    if (le === undefined || !keep(labels)) continue;
    const bound = le === '+Inf' ? Infinity : Number(le);
    buckets.set(bound, (buckets.get(bound) ?? 0) + Number(line.slice(close + 1).trim()));
  }
  return buckets;
}

/** `beyondMs` is set when a quantile falls past the last finite bucket: the value is then only a lower bound. */
export interface Quantile { ms: number; bucketMs: number | null; beyondMs?: number }
export interface HistogramSummary { count: number; p50: Quantile; p99: Quantile }

/** Quantiles of what happened between two scrapes, interpolated inside a bucket as Prometheus' histogram_quantile does. */
export function histogramDelta(before: Buckets, after: Buckets): HistogramSummary {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const cumulative = bounds.map((b) => (after.get(b) ?? 0) - (before.get(b) ?? 0));
  const total = cumulative.at(-1) ?? 0;
  const quantile = (q: number): Quantile => {
    if (total === 0) return { ms: NaN, bucketMs: null };
    const rank = q * total;
    const i = cumulative.findIndex((c) => c >= rank);
    const upper = bounds[i] ?? Infinity;
    const lower = i > 0 ? (bounds[i - 1] ?? 0) : 0;
    if (upper === Infinity) return { ms: lower * 1000, bucketMs: null, beyondMs: lower * 1000 };
    const below = i > 0 ? (cumulative[i - 1] ?? 0) : 0;
    const inBucket = (cumulative[i] ?? 0) - below;
    return { ms: (lower + ((upper - lower) * (rank - below)) / (inBucket || 1)) * 1000, bucketMs: upper * 1000 };
  };
  return { count: total, p50: quantile(0.5), p99: quantile(0.99) };
}
