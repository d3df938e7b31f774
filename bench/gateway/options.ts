/**
 * What the gateway benchmark runs and sends: its command-line flags, the fixed workload (model,
 * price, request bodies, a quota that never denies) and the targets of issue 3. They live
 * together so the JSON result file can record exactly the settings a run used, and so every
 * phase reads one resolved options object instead of the raw flags.
 */
import { parseArgs } from 'node:util';

export const MODEL = 'gpt-4o-mini';
/** gpt-4o-mini's list price ($0.15 / $0.60 per million tokens) in micros per Mtok. */
export const PRICE = { input_price_micros_per_mtok: 150_000, output_price_micros_per_mtok: 600_000, max_output_tokens: 4096 };
/** 1,000,000,000 units: the quota never denies during the run. */
export const HUGE_QUOTA_MICROS = 1_000_000_000_000_000;
export const TARGETS = { admissionP99Ms: 10, overheadP99Ms: 50, billedPerSecond: 300 } as const;
export const REQUEST_TIMEOUT_S = 30;

export const CHAT_BODY = { model: MODEL, max_tokens: 64, messages: [{ role: 'user', content: 'Benchmark: reply with a short greeting.' }] };
export const STREAM_BODY = { ...CHAT_BODY, stream: true, stream_options: { include_usage: true } };

/** The resolved command-line flags. */
export interface BenchOptions {
  /** Seconds of each direct run, and the length each gateway run is sized to. @default 20 */
  durationS: number;
  /** One direct + gateway load step per value. @default [50, 200] */
  connections: number[];
  /** Gateway requests before the first measured step. @default 400 */
  warmupRequests: number;
  /** Streamed requests per target (direct, gateway). @default 1000 */
  streamRequests: number;
  /** Concurrent stream loops. @default 50 */
  streamConcurrency: number;
  /** Keep the throwaway data directory at the end. @default false */
  keepData: boolean;
  /** Start the gateway (and the floor process) with `node --cpu-prof`. @default false */
  cpuProfile: boolean;
  /** Run the Temporal floor (the same workflow shape with no-op steps) beside each gateway step. @default true */
  floor: boolean;
  /** Run on the topology of `npm run cluster` (Temporal cluster, Redis Cluster) instead of the dev stack. @default false */
  cluster: boolean;
}

/** Parses the flags (from `process.argv` unless `args` is given); unknown flags throw, as parseArgs does. */
export function parseBenchOptions(args?: string[]): BenchOptions {
  const { values: cli } = parseArgs({
    args,
    options: {
      duration: { type: 'string', default: '20' },
      connections: { type: 'string', default: '50,200' },
      warmup: { type: 'string', default: '400' },
      'stream-requests': { type: 'string', default: '1000' },
      'stream-concurrency': { type: 'string', default: '50' },
      'keep-data': { type: 'boolean', default: false },
      'cpu-prof': { type: 'boolean', default: false },
      'skip-floor': { type: 'boolean', default: false },
      cluster: { type: 'boolean', default: false },
    },
  });
  return {
    durationS: Number(cli.duration),
    connections: cli.connections.split(',').map(Number),
    warmupRequests: Number(cli.warmup),
    streamRequests: Number(cli['stream-requests']),
    streamConcurrency: Number(cli['stream-concurrency']),
    keepData: cli['keep-data'],
    cpuProfile: cli['cpu-prof'],
    floor: !cli['skip-floor'],
    cluster: cli.cluster,
  };
}
