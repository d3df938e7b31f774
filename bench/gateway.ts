/**
 * Gateway benchmark (M11, issue 3 item 7): billed requests/s, end-to-end latency and its
 * overhead over a direct upstream call, streaming time to first byte, server-side admission
 * latency, a breakdown of sampled Temporal workflow histories, CPU per process, and a
 * billing-exactness check of the ledger afterwards. bench/README.md explains every figure.
 *
 *   npx tsx bench/gateway.ts [--duration 20] [--connections 50,200] [--warmup 400]
 *                            [--stream-requests 1000] [--stream-concurrency 50] [--keep-data] [--cpu-prof]
 *
 * The stack starts as `npm start` starts it (startStack: Temporal dev server with its SQLite
 * file, Redis with AOF, PostgreSQL with fsync) on free ports in a throwaway data dir, or uses
 * TEMPORAL_ADDRESS / REDIS_URL / DATABASE_URL when set. The gateway itself (API + worker +
 * mock upstream at zero latency) runs as `src/main.ts` in a child process, so the load
 * generator never shares its event loop and each process's CPU can be told apart.
 *
 * Gateway runs are request-count bounded (sized from the previous run's rate to last about
 * --duration seconds, hard-capped at 3x): a time-bounded autocannon run destroys its in-flight
 * requests at the deadline, and those would be billed without a 2xx, which would make the
 * "committed ledger rows == 2xx responses" check meaningless.
 *
 * Targets: admission P99 < 10 ms, overhead P99 < 50 ms over the direct call, 300+ billed
 * requests/s. Exit code 1 when a target is missed, a request failed, or billing is not exact.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { inspect, parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { tsToMs } from '@temporalio/common';
import autocannon from 'autocannon';
import { loadConfig } from '../src/config';
import { createDb } from '../src/db/knex';
import { createLogger } from '../src/log';
import { startStack, type RunningStack } from '../src/stack';
import { freePort } from '../src/stack/child';

const MODEL = 'gpt-4o-mini';
/** gpt-4o-mini's list price ($0.15 / $0.60 per million tokens) in micros per Mtok. */
const PRICE = { input_price_micros_per_mtok: 150_000, output_price_micros_per_mtok: 600_000, max_output_tokens: 4096 };
/** 1,000,000,000 units: the quota never denies during the run. */
const HUGE_QUOTA_MICROS = 1_000_000_000_000_000;
const TARGETS = { admissionP99Ms: 10, overheadP99Ms: 50, billedPerSecond: 300 } as const;
const REQUEST_TIMEOUT_S = 30;

const { values: cli } = parseArgs({
  options: {
    duration: { type: 'string', default: '20' },
    connections: { type: 'string', default: '50,200' },
    warmup: { type: 'string', default: '400' },
    'stream-requests': { type: 'string', default: '1000' },
    'stream-concurrency': { type: 'string', default: '50' },
    'keep-data': { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false },
  },
});
const DURATION_S = Number(cli.duration);
const CONNECTIONS = cli.connections.split(',').map(Number);
const WARMUP_REQUESTS = Number(cli.warmup);
const STREAM_REQUESTS = Number(cli['stream-requests']);
const STREAM_CONCURRENCY = Number(cli['stream-concurrency']);

/** Thrown when the benchmark cannot set itself up (the gateway does not start, an admin call fails). */
class BenchSetupError extends Error {
  override name = 'BenchSetupError';
}

// ---------- statistics ----------

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
}

interface LatencySummary { count: number; p50Ms: number; p90Ms: number; p99Ms: number; maxMs: number }

function summarise(samplesMs: number[]): LatencySummary {
  const sorted = [...samplesMs].sort((a, b) => a - b);
  return { count: sorted.length, p50Ms: percentile(sorted, 50), p90Ms: percentile(sorted, 90), p99Ms: percentile(sorted, 99), maxMs: sorted.at(-1) ?? NaN };
}

/** Cumulative bucket counts by upper bound (seconds), summed over every label set that `keep` accepts. */
type Buckets = Map<number, number>;

function parseHistogram(text: string, name: string, keep: (labels: string) => boolean = () => true): Buckets {
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
interface Quantile { ms: number; bucketMs: number | null; beyondMs?: number }
interface HistogramSummary { count: number; p50: Quantile; p99: Quantile }

/** Quantiles of what happened between two scrapes, interpolated inside a bucket as Prometheus' histogram_quantile does. */
function histogramDelta(before: Buckets, after: Buckets): HistogramSummary {
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

/** The server-side histograms that say where a request's time goes. */
const SERVER_HISTOGRAMS = {
  admission: { name: 'billing_admission_duration_seconds' },
  upstream: { name: 'billing_upstream_duration_seconds' },
  settlement: { name: 'billing_settlement_duration_seconds' },
  apiHttp: { name: 'http_request_duration_seconds', keep: (labels: string) => labels.includes('route="/v1/chat/completions"') },
} as const satisfies Record<string, { name: string; keep?: (labels: string) => boolean }>;
type ServerHistogram = keyof typeof SERVER_HISTOGRAMS;

/**
 * Event-loop delay of the gateway process; prom-client resets its monitor at every scrape, so a scrape reports the
 * window since the previous one. Its monitor samples every 10 ms and reports that interval too: an idle loop reads ~10 ms.
 */
interface EventLoopDelay { p50Ms: number; p99Ms: number; maxMs: number }
interface Scrape { histograms: Record<ServerHistogram, Buckets>; eventLoop: EventLoopDelay }
type ServerFigures = Record<ServerHistogram, HistogramSummary> & { eventLoop: EventLoopDelay };

function gaugeMs(text: string, name: string): number {
  const match = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return match?.[1] === undefined ? NaN : Number(match[1]) * 1000;
}

async function scrape(apiUrl: string): Promise<Scrape> {
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

function serverDelta(before: Scrape, after: Scrape): ServerFigures {
  const keys = Object.keys(SERVER_HISTOGRAMS) as ServerHistogram[];
  const histograms = Object.fromEntries(keys.map((k) => [k, histogramDelta(before.histograms[k], after.histograms[k])])) as Record<ServerHistogram, HistogramSummary>;
  return { ...histograms, eventLoop: after.eventLoop };
}

// ---------- CPU per process ----------

const CLOCK_TICKS = ((): number => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

interface ProcStat { pid: number; ppid: number; comm: string; ticks: number }

/** utime + stime of the process plus cutime + cstime of its reaped children (PostgreSQL backends come and go). */
function readProcStats(): ProcStat[] {
  const stats: ProcStat[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const text = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const comm = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
      const f = text.slice(text.lastIndexOf(')') + 2).split(' ').map(Number);
      stats.push({ pid: Number(entry), ppid: f[1] ?? 0, comm, ticks: (f[11] ?? 0) + (f[12] ?? 0) + (f[13] ?? 0) + (f[14] ?? 0) });
    } catch {
      // the process ended while we listed /proc
    }
  }
  return stats;
}

const CpuGroup = { bench: 'bench', gateway: 'gateway', temporal: 'temporal', redis: 'redis', postgres: 'postgres', other: 'other' } as const;
type CpuGroup = (typeof CpuGroup)[keyof typeof CpuGroup];
interface CpuSnapshot { atMs: number; seconds: Record<CpuGroup, number>; machineBusyS: number }

/** Busy CPU seconds of the whole machine (all cores, everything but idle and iowait): the host is shared, so say how much was not ours. */
function machineBusySeconds(): number {
  const fields = (fs.readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((sum, v) => sum + v, 0);
  return (total - (fields[3] ?? 0) - (fields[4] ?? 0)) / CLOCK_TICKS;
}

/** CPU seconds by process group: this process, and each subtree of its children, named by the child. */
function cpuSnapshot(gatewayPid: number | undefined): CpuSnapshot {
  const seconds: Record<CpuGroup, number> = { bench: 0, gateway: 0, temporal: 0, redis: 0, postgres: 0, other: 0 };
  const usage = process.cpuUsage();
  seconds.bench = (usage.user + usage.system) / 1e6;
  const stats = readProcStats();
  const byPid = new Map(stats.map((s) => [s.pid, s]));
  const groupOfChild = (child: ProcStat): CpuGroup => {
    if (child.pid === gatewayPid) return CpuGroup.gateway;
    if (child.comm.startsWith('temporal')) return CpuGroup.temporal;
    if (child.comm.startsWith('redis')) return CpuGroup.redis;
    if (child.comm.startsWith('postgres')) return CpuGroup.postgres;
    return CpuGroup.other;
  };
  for (const s of stats) {
    // Walk up to the ancestor that is a direct child of this process.
    let node: ProcStat | undefined = s;
    while (node && node.ppid !== process.pid) node = byPid.get(node.ppid);
    if (node) seconds[groupOfChild(node)] += s.ticks / CLOCK_TICKS;
  }
  return { atMs: performance.now(), seconds, machineBusyS: machineBusySeconds() };
}

interface CpuPhase { wallS: number; cpuS: Record<CpuGroup, number>; machineBusyS: number }

function cpuBetween(a: CpuSnapshot, b: CpuSnapshot): CpuPhase {
  const groups = Object.keys(a.seconds) as CpuGroup[];
  return {
    wallS: (b.atMs - a.atMs) / 1000,
    cpuS: Object.fromEntries(groups.map((g) => [g, b.seconds[g] - a.seconds[g]])) as Record<CpuGroup, number>,
    machineBusyS: b.machineBusyS - a.machineBusyS,
  };
}

// ---------- the gateway process ----------

interface GatewayProcess {
  child: ChildProcess;
  apiUrl: string;
  upstreamUrl: string;
  /** warn/error log lines the gateway wrote (pino levels 40, 50, 60). */
  problems: { warn: number; error: number; last: string[] };
  stop(): Promise<void>;
}

/** Starts `src/main.ts` (role all) on the given services: it starts the mock upstream, migrates, runs the worker and the API. */
async function startGateway(endpoints: { temporalAddress: string; redisUrl: string; databaseUrl: string }, adminToken: string): Promise<GatewayProcess> {
  const rootDir = loadConfig().rootDir;
  const [apiPort, mockPort, workerMetricsPort] = [await freePort(), await freePort(), await freePort()];
  // The child reads its configuration from the environment like `npm start` does; ours passes through.
  const env = {
    ...process.env,
    TEMPORAL_ADDRESS: endpoints.temporalAddress,
    REDIS_URL: endpoints.redisUrl,
    DATABASE_URL: endpoints.databaseUrl,
    UPSTREAM_BASE_URL: '', // always the built-in mock, never a real provider
    TEMPORAL_TASK_QUEUE: `bench-gateway-${process.pid}`,
    ADMIN_TOKEN: adminToken,
    LOG_LEVEL: 'warn',
    API_PORT: String(apiPort),
    MOCK_UPSTREAM_PORT: String(mockPort),
    WORKER_METRICS_PORT: String(workerMetricsPort),
  };
  // --cpu-prof: V8 writes the gateway's CPU profile to bench/results/ when it exits (open it in Chrome DevTools).
  const profile = cli['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', path.join(rootDir, 'bench', 'results')] : [];
  const child = spawn(process.execPath, [...profile, '--import', 'tsx', path.join(rootDir, 'src', 'main.ts')], { cwd: rootDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const problems = { warn: 0, error: 0, last: [] as string[] };
  const tail: string[] = [];
  let ready = false;
  const onLine = (line: string): void => {
    if (line.trim() === '') return;
    tail.push(line);
    if (tail.length > 30) tail.shift();
    if (line.includes('Durable billing is ready')) ready = true;
    const level = /"level":(\d+)/.exec(line)?.[1];
    if (level === '40') problems.warn += 1;
    if (level === '50' || level === '60') problems.error += 1;
    if (level !== undefined && Number(level) >= 40) {
      problems.last.push(line.slice(0, 1500));
      if (problems.last.length > 5) problems.last.shift();
    }
  };
  for (const stream of [child.stdout, child.stderr]) {
    let carry = '';
    stream?.on('data', (buf: Buffer) => {
      const lines = (carry + buf.toString('utf8')).split('\n');
      carry = lines.pop() ?? '';
      lines.forEach(onLine);
    });
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM'); // main.ts stops the worker, the API and the mock, then exits
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
  };
  const apiUrl = `http://127.0.0.1:${apiPort}`;
  const deadline = Date.now() + 120_000;
  while (!ready || !(await fetch(`${apiUrl}/readyz`).then((r) => r.ok, () => false))) {
    if (child.exitCode !== null || child.signalCode !== null) throw new BenchSetupError(`the gateway exited while starting:\n${tail.join('\n')}`);
    if (Date.now() > deadline) {
      await stop();
      throw new BenchSetupError(`the gateway was not ready after 120 s:\n${tail.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { child, apiUrl, upstreamUrl: `http://127.0.0.1:${mockPort}`, problems, stop };
}

async function adminCall<T>(apiUrl: string, token: string, method: string, route: string, body?: unknown): Promise<T> {
  const res = await fetch(`${apiUrl}${route}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new BenchSetupError(`${method} ${route}: HTTP ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

// ---------- load ----------

const CHAT_BODY = { model: MODEL, max_tokens: 64, messages: [{ role: 'user', content: 'Benchmark: reply with a short greeting.' }] };
const STREAM_BODY = { ...CHAT_BODY, stream: true, stream_options: { include_usage: true } };

interface LoadFigures {
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

/** One autocannon run: bounded by `amount` (gateway) or by `durationS` (direct), hard-capped at `capS`. */
function runLoad(opts: { target: LoadFigures['target']; url: string; headers: Record<string, string>; connections: number; amount?: number; durationS?: number; capS: number }): Promise<LoadFigures> {
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
        ...(opts.amount !== undefined ? { amount: opts.amount } : { duration: opts.durationS ?? DURATION_S }),
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

interface StreamFigures { target: 'gateway' | 'direct'; requests: number; ok2xx: number; non2xx: number; errors: number; incomplete: number; ttfb: LatencySummary; total: LatencySummary }

/** `total` streamed requests through `concurrency` loops; TTFB = first body chunk (the gateway sends its headers with it). */
async function runStreams(target: StreamFigures['target'], url: string, headers: Record<string, string>, total: number, concurrency: number): Promise<StreamFigures> {
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

// ---------- Temporal history breakdown ----------

/** One window of wall-clock time (Date.now()) in which a gateway phase started its workflows. */
interface PhaseWindow { phase: string; fromMs: number; toMs: number }

/** Per-workflow sums of where a billed request's workflow spent its time, from sampled histories. */
interface HistoryBreakdown {
  phase: string;
  sampled: number;
  /** Workflow started -> completed. */
  workflow: LatencySummary;
  /** Workflow tasks waiting in the task queue for a worker slot/poller (scheduled -> started), summed per workflow. */
  workflowTaskQueue: LatencySummary;
  /** Workflow tasks running in the worker (started -> completed; includes the local activities admission, routing, settlement). */
  workflowTaskRun: LatencySummary;
  /** The upstream activity waiting in the task queue (scheduled -> started). */
  activityQueue: LatencySummary;
  /** The upstream activity running (started -> completed). */
  activityRun: LatencySummary;
  workflowTasksPerRequest: number;
}

const eventNumber = (v: unknown): number => (typeof v === 'number' ? v : Number(String(v)));

/** Samples up to `perPhase` workflows of each phase and sums their history's spans. */
async function temporalBreakdown(address: string, namespace: string, tenantId: string, windows: PhaseWindow[], perPhase = 30): Promise<HistoryBreakdown[]> {
  const connection = await Connection.connect({ address });
  try {
    const client = new Client({ connection, namespace });
    const runs: Array<{ workflowId: string; runId: string; startMs: number }> = [];
    for await (const wf of client.workflow.list({ query: `TenantId = '${tenantId}'` })) runs.push({ workflowId: wf.workflowId, runId: wf.runId, startMs: wf.startTime.getTime() });
    const breakdowns: HistoryBreakdown[] = [];
    for (const window of windows) {
      const inWindow = runs.filter((r) => r.startMs >= window.fromMs && r.startMs <= window.toMs);
      const step = Math.max(1, Math.floor(inWindow.length / perPhase));
      const sample = inWindow.filter((_, i) => i % step === 0).slice(0, perPhase);
      const spans = { workflow: [] as number[], wftQueue: [] as number[], wftRun: [] as number[], actQueue: [] as number[], actRun: [] as number[] };
      let workflowTasks = 0;
      for (const run of sample) {
        const events = (await client.workflow.getHandle(run.workflowId, run.runId).fetchHistory()).events ?? [];
        const at = new Map<number, number>();
        const sums = { wftQueue: 0, wftRun: 0, actQueue: 0, actRun: 0 };
        for (const e of events) {
          const t = tsToMs(e.eventTime);
          at.set(eventNumber(e.eventId), t);
          const since = (id: unknown): number => t - (at.get(eventNumber(id)) ?? t);
          if (e.workflowTaskStartedEventAttributes) sums.wftQueue += since(e.workflowTaskStartedEventAttributes.scheduledEventId);
          if (e.workflowTaskCompletedEventAttributes) {
            sums.wftRun += since(e.workflowTaskCompletedEventAttributes.startedEventId);
            workflowTasks += 1;
          }
          if (e.activityTaskStartedEventAttributes) sums.actQueue += since(e.activityTaskStartedEventAttributes.scheduledEventId);
          if (e.activityTaskCompletedEventAttributes) sums.actRun += since(e.activityTaskCompletedEventAttributes.startedEventId);
        }
        const first = events[0];
        const last = events.at(-1);
        if (first && last) spans.workflow.push(tsToMs(last.eventTime) - tsToMs(first.eventTime));
        spans.wftQueue.push(sums.wftQueue);
        spans.wftRun.push(sums.wftRun);
        spans.actQueue.push(sums.actQueue);
        spans.actRun.push(sums.actRun);
      }
      breakdowns.push({
        phase: window.phase,
        sampled: sample.length,
        workflow: summarise(spans.workflow),
        workflowTaskQueue: summarise(spans.wftQueue),
        workflowTaskRun: summarise(spans.wftRun),
        activityQueue: summarise(spans.actQueue),
        activityRun: summarise(spans.actRun),
        workflowTasksPerRequest: sample.length > 0 ? workflowTasks / sample.length : NaN,
      });
    }
    return breakdowns;
  } finally {
    await connection.close();
  }
}

// ---------- billing exactness ----------

interface BillingCheck {
  expected2xx: number;
  committed: number;
  voided: number;
  pending: number;
  committedSumMicros: string;
  tenantUsedMicros: number;
  keySpentMicros: number;
  waitedS: number;
  rowsMatch: boolean;
  usedMatches: boolean;
  spentMatches: boolean;
}

/** Waits (up to 60 s) for settlements in flight, then compares the ledger with the 2xx count and the live counters. */
async function verifyBilling(databaseUrl: string, apiUrl: string, token: string, tenantId: string, apiKeyId: string, expected2xx: number): Promise<BillingCheck> {
  const db = createDb(databaseUrl, { max: 2 });
  const started = performance.now();
  try {
    const read = async (): Promise<{ committed: number; voided: number; pending: number; sum: string }> => {
      const result = await db.raw<{ rows: Array<{ committed: string; voided: string; pending: string; sum: string }> }>(
        `SELECT count(*) FILTER (WHERE status = 'committed') AS committed,
                count(*) FILTER (WHERE status = 'voided') AS voided,
                count(*) FILTER (WHERE status = 'pending') AS pending,
                COALESCE(SUM(amount_micros) FILTER (WHERE status = 'committed'), 0)::text AS sum
           FROM billing_transaction WHERE tenant_id = ? AND kind = 'usage'`,
        [tenantId],
      );
      const row = result.rows[0];
      if (!row) throw new BenchSetupError('ledger query returned no row');
      return { committed: Number(row.committed), voided: Number(row.voided), pending: Number(row.pending), sum: row.sum };
    };
    let ledger = await read();
    let unchangedPolls = 0;
    while (performance.now() - started < 60_000) {
      if (ledger.pending === 0 && (ledger.committed === expected2xx || unchangedPolls >= 4)) break;
      await new Promise((r) => setTimeout(r, 500));
      const next = await read();
      unchangedPolls = next.committed === ledger.committed && next.pending === ledger.pending ? unchangedPolls + 1 : 0;
      ledger = next;
    }
    const tenant = await adminCall<{ used_micros: number }>(apiUrl, token, 'GET', `/admin/tenants/${tenantId}`);
    const key = await adminCall<{ spent_micros: number }>(apiUrl, token, 'GET', `/admin/api-keys/${apiKeyId}`);
    return {
      expected2xx,
      committed: ledger.committed,
      voided: ledger.voided,
      pending: ledger.pending,
      committedSumMicros: ledger.sum,
      tenantUsedMicros: tenant.used_micros,
      keySpentMicros: key.spent_micros,
      waitedS: (performance.now() - started) / 1000,
      rowsMatch: ledger.committed === expected2xx && ledger.pending === 0,
      // BigInt: the sum of a BIGINT column comes back as text and must compare exactly.
      usedMatches: BigInt(ledger.sum) === BigInt(tenant.used_micros),
      spentMatches: BigInt(ledger.sum) === BigInt(key.spent_micros),
    };
  } finally {
    await db.destroy();
  }
}

// ---------- report ----------

const ms = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(1)} ms` : 'n/a');
const cell = (v: string | number, width: number): string => String(v).padStart(width);
const verdict = (ok: boolean): string => (ok ? 'PASS' : 'FAIL');
/** A histogram quantile with the bucket it fell in ("> 10000 ms" past the last bucket). */
const q = (x: Quantile): string => (x.beyondMs !== undefined ? `> ${x.beyondMs.toFixed(0)} ms` : `${ms(x.ms)} (le ${x.bucketMs ?? '?'})`);

function table(title: string, header: string[], rows: Array<Array<string | number>>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i] ?? '').length)));
  const line = (cells: Array<string | number>): string => `| ${cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i] ?? 0) : cell(c, widths[i] ?? 0))).join(' | ')} |`;
  return [`\n${title}`, line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

interface LoadStep {
  connections: number;
  direct: LoadFigures;
  gateway: LoadFigures;
  overhead: { p50Ms: number; p99Ms: number; p50Ratio: number; p99Ratio: number };
  server: ServerFigures;
  cpu: { direct: CpuPhase; gateway: CpuPhase };
}

interface StreamStep {
  direct: StreamFigures;
  gateway: StreamFigures;
  ttfbOverhead: { p50Ms: number; p99Ms: number };
  server: ServerFigures;
  cpu: { direct: CpuPhase; gateway: CpuPhase };
}

interface Target { name: string; measured: string; target: string; pass: boolean }

function printReport(r: { load: LoadStep[]; stream: StreamStep; warmup: LoadFigures; temporal: HistoryBreakdown[]; billing: BillingCheck; targets: Target[]; gatewayLog: GatewayProcess['problems']; header: string }): void {
  const out: string[] = [r.header];
  out.push(table('Non-streaming load (POST /v1/chat/completions; latency of 2xx responses)',
    ['run', 'requests', '2xx', 'non-2xx', 'errors', 'aborted', 'seconds', '2xx/s', 'P50', 'P90', 'P99', 'max'],
    [r.warmup, ...r.load.flatMap((s) => [s.direct, s.gateway])].map((f, i) => [
      i === 0 ? `warm-up gateway c=${f.connections}` : `${f.target} c=${f.connections}`,
      f.sent, f.ok2xx, f.non2xx, f.errors, f.abortedInFlight, f.durationS.toFixed(1), f.okPerSecond.toFixed(0),
      ms(f.latency.p50Ms), ms(f.latency.p90Ms), ms(f.latency.p99Ms), ms(f.latency.maxMs),
    ])));
  out.push(table('Gateway overhead over the direct call', ['connections', 'P50 overhead', 'P99 overhead', 'P50 ratio', 'P99 ratio'],
    r.load.map((s) => [s.connections, ms(s.overhead.p50Ms), ms(s.overhead.p99Ms), `${s.overhead.p50Ratio.toFixed(1)}x`, `${s.overhead.p99Ratio.toFixed(1)}x`])));
  const st = r.stream;
  out.push(table(`Streaming (c=${STREAM_CONCURRENCY}, ${STREAM_REQUESTS} requests each): time to first body chunk`,
    ['target', '2xx', 'non-2xx', 'errors', 'no [DONE]', 'TTFB P50', 'TTFB P99', 'whole P50', 'whole P99'],
    [st.direct, st.gateway].map((f) => [f.target, f.ok2xx, f.non2xx, f.errors, f.incomplete, ms(f.ttfb.p50Ms), ms(f.ttfb.p99Ms), ms(f.total.p50Ms), ms(f.total.p99Ms)])
      .concat([['overhead', '', '', '', '', ms(st.ttfbOverhead.p50Ms), ms(st.ttfbOverhead.p99Ms), '', '']])));
  const serverRows = [...r.load.map((s) => [`gateway c=${s.connections}`, s.server] as const), ['streaming', st.server] as const];
  out.push(table('Gateway process, server side (API /metrics scraped before and after each phase; histogram quantiles interpolated in buckets)',
    ['phase', 'admissions', 'admission P50', 'admission P99', 'upstream P50', 'upstream P99', 'settle P50', 'settle P99', 'API http P50', 'API http P99', 'event-loop delay P50/P99/max (incl. 10 ms sampling)'],
    serverRows.map(([name, h]) => [name, h.admission.count, q(h.admission.p50), q(h.admission.p99), q(h.upstream.p50), q(h.upstream.p99),
      q(h.settlement.p50), q(h.settlement.p99), q(h.apiHttp.p50), q(h.apiHttp.p99),
      `${h.eventLoop.p50Ms.toFixed(0)} / ${h.eventLoop.p99Ms.toFixed(0)} / ${h.eventLoop.maxMs.toFixed(0)} ms`])));
  const p5099 = (l: LatencySummary): string => `${l.p50Ms.toFixed(0)} / ${l.p99Ms.toFixed(0)}`;
  out.push(table('Temporal workflow histories (sampled per phase; per-request sums, P50 / P99 in ms)',
    ['phase', 'sampled', 'workflow total', 'WFT queue wait', 'WFT run (+local acts)', 'upstream act queue', 'upstream act run', 'WFTs/request'],
    r.temporal.map((t) => [t.phase, t.sampled, p5099(t.workflow), p5099(t.workflowTaskQueue), p5099(t.workflowTaskRun), p5099(t.activityQueue), p5099(t.activityRun), t.workflowTasksPerRequest.toFixed(1)])));
  const cpuRows: Array<readonly [string, CpuPhase]> = [
    ...r.load.flatMap((s) => [[`direct c=${s.connections}`, s.cpu.direct], [`gateway c=${s.connections}`, s.cpu.gateway]] as const),
    ['stream direct', st.cpu.direct], ['stream gateway', st.cpu.gateway],
  ];
  const groups = Object.values(CpuGroup);
  out.push(table(`CPU seconds per process group (${os.cpus().length} cores; "not ours" = machine busy minus this benchmark's processes)`,
    ['phase', 'wall s', ...groups, 'ours', 'not ours', 'machine busy'],
    cpuRows.map(([name, c]) => {
      const ours = groups.reduce((sum, g) => sum + c.cpuS[g], 0);
      return [name, c.wallS.toFixed(1), ...groups.map((g) => c.cpuS[g].toFixed(1)), ours.toFixed(1), Math.max(0, c.machineBusyS - ours).toFixed(1), `${(c.machineBusyS / c.wallS).toFixed(2)} cores`];
    })));
  const perRequest: Array<readonly [string, CpuPhase, number]> = [
    ...r.load.flatMap((s) => [[`direct c=${s.connections}`, s.cpu.direct, s.direct.ok2xx], [`gateway c=${s.connections}`, s.cpu.gateway, s.gateway.ok2xx]] as const),
    ['stream gateway', st.cpu.gateway, st.gateway.ok2xx],
  ];
  out.push(table('CPU milliseconds per 2xx response (what one request costs each process)', ['phase', ...groups.filter((g) => g !== 'other'), 'ours'],
    perRequest.map(([name, c, n]) => [name, ...groups.filter((g) => g !== 'other').map((g) => (1000 * c.cpuS[g] / n).toFixed(2)),
      (1000 * groups.reduce((sum, g) => sum + c.cpuS[g], 0) / n).toFixed(2)])));
  const b = r.billing;
  out.push(table(`Billing exactness (after ${b.waitedS.toFixed(1)} s of settlement wait)`, ['check', 'ledger', 'expected', 'result'], [
    ['committed usage rows == 2xx responses', b.committed, b.expected2xx, verdict(b.rowsMatch)],
    ['pending rows', b.pending, 0, verdict(b.pending === 0)],
    ['voided rows', b.voided, '-', ''],
    ['tenant used_micros == SUM(amount_micros)', b.committedSumMicros, b.tenantUsedMicros, verdict(b.usedMatches)],
    ['key spent_micros == SUM(amount_micros)', b.committedSumMicros, b.keySpentMicros, verdict(b.spentMatches)],
  ]));
  out.push(table('Targets', ['target', 'measured', 'goal', 'result'], r.targets.map((t) => [t.name, t.measured, t.target, verdict(t.pass)])));
  out.push(`\ngateway log lines: ${r.gatewayLog.warn} warn, ${r.gatewayLog.error} error${r.gatewayLog.last.length > 0 ? `; last:\n  ${r.gatewayLog.last.join('\n  ')}` : ''}`);
  console.log(out.join('\n'));
}

// ---------- the run ----------

async function measure(gw: GatewayProcess, token: string, services: { databaseUrl: string; temporalAddress: string; namespace: string }, servicesNote: string): Promise<boolean> {
  const admin = <T,>(method: string, route: string, body?: unknown): Promise<T> => adminCall<T>(gw.apiUrl, token, method, route, body);
  const loadAtStart = os.loadavg();
  const tenantId = `bench-${Date.now().toString(36)}-${process.pid}`;
  await admin('PUT', `/admin/models/${MODEL}`, PRICE);
  await admin('POST', '/admin/tenants', { id: tenantId, name: 'gateway benchmark', quota_limit_micros: HUGE_QUOTA_MICROS });
  const apiKey = await admin<{ id: string; key: string }>('POST', `/admin/tenants/${tenantId}/api-keys`, { name: 'bench' });
  const gatewayChat = `${gw.apiUrl}/v1/chat/completions`;
  const directChat = `${gw.upstreamUrl}/v1/chat/completions`;
  const auth = { authorization: `Bearer ${apiKey.key}` };

  // One request each way first: a broken setup should fail loudly, not as 100% non-2xx.
  for (const [url, headers] of [[directChat, {}], [gatewayChat, auth]] as const) {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(CHAT_BODY) });
    if (res.status !== 200) throw new BenchSetupError(`probe ${url}: HTTP ${res.status} ${await res.text()}\ngateway log:\n${gw.problems.last.join('\n')}`);
    await res.text();
  }
  let gateway2xx = 1;

  console.error(`warm-up: ${WARMUP_REQUESTS} gateway requests`);
  const warmup = await runLoad({ target: 'gateway', url: gatewayChat, headers: auth, connections: Math.min(50, WARMUP_REQUESTS), amount: WARMUP_REQUESTS, capS: 120 });
  gateway2xx += warmup.ok2xx;
  let plannedRate = warmup.okPerSecond;

  const load: LoadStep[] = [];
  const windows: PhaseWindow[] = [];
  for (const connections of CONNECTIONS) {
    console.error(`direct c=${connections}: ${DURATION_S} s`);
    const c0 = cpuSnapshot(gw.child.pid);
    const direct = await runLoad({ target: 'direct', url: directChat, headers: {}, connections, durationS: DURATION_S, capS: DURATION_S + 30 });
    const c1 = cpuSnapshot(gw.child.pid);
    const amount = Math.max(connections * 2, Math.round(plannedRate * DURATION_S));
    console.error(`gateway c=${connections}: ${amount} requests (about ${DURATION_S} s at ${plannedRate.toFixed(0)}/s)`);
    const before = await scrape(gw.apiUrl);
    const c2 = cpuSnapshot(gw.child.pid);
    const fromMs = Date.now();
    const gateway = await runLoad({ target: 'gateway', url: gatewayChat, headers: auth, connections, amount, capS: DURATION_S * 3 + 10 });
    windows.push({ phase: `gateway c=${connections}`, fromMs, toMs: Date.now() });
    const c3 = cpuSnapshot(gw.child.pid);
    const server = serverDelta(before, await scrape(gw.apiUrl));
    gateway2xx += gateway.ok2xx;
    if (gateway.okPerSecond > 0) plannedRate = gateway.okPerSecond;
    load.push({
      connections, direct, gateway, server,
      overhead: {
        p50Ms: gateway.latency.p50Ms - direct.latency.p50Ms,
        p99Ms: gateway.latency.p99Ms - direct.latency.p99Ms,
        p50Ratio: gateway.latency.p50Ms / direct.latency.p50Ms,
        p99Ratio: gateway.latency.p99Ms / direct.latency.p99Ms,
      },
      cpu: { direct: cpuBetween(c0, c1), gateway: cpuBetween(c2, c3) },
    });
  }

  console.error(`streaming: ${STREAM_REQUESTS} requests at c=${STREAM_CONCURRENCY}, direct then gateway`);
  const s0 = cpuSnapshot(gw.child.pid);
  const streamDirect = await runStreams('direct', directChat, {}, STREAM_REQUESTS, STREAM_CONCURRENCY);
  const s1 = cpuSnapshot(gw.child.pid);
  const streamBefore = await scrape(gw.apiUrl);
  const streamFromMs = Date.now();
  const streamGateway = await runStreams('gateway', gatewayChat, auth, STREAM_REQUESTS, STREAM_CONCURRENCY);
  windows.push({ phase: 'streaming', fromMs: streamFromMs, toMs: Date.now() });
  const s2 = cpuSnapshot(gw.child.pid);
  const stream: StreamStep = {
    direct: streamDirect,
    gateway: streamGateway,
    ttfbOverhead: { p50Ms: streamGateway.ttfb.p50Ms - streamDirect.ttfb.p50Ms, p99Ms: streamGateway.ttfb.p99Ms - streamDirect.ttfb.p99Ms },
    server: serverDelta(streamBefore, await scrape(gw.apiUrl)),
    cpu: { direct: cpuBetween(s0, s1), gateway: cpuBetween(s1, s2) },
  };
  gateway2xx += streamGateway.ok2xx;

  console.error('waiting for settlements in flight, then checking the ledger');
  const billing = await verifyBilling(services.databaseUrl, gw.apiUrl, token, tenantId, apiKey.id, gateway2xx);
  console.error('sampling workflow histories');
  const temporal = await temporalBreakdown(services.temporalAddress, services.namespace, tenantId, windows);

  const targets: Target[] = [
    ...load.map((s) => ({ name: `admission P99, gateway c=${s.connections}`, measured: q(s.server.admission.p99), target: `< ${TARGETS.admissionP99Ms} ms`, pass: s.server.admission.p99.ms < TARGETS.admissionP99Ms })),
    { name: 'admission P99, streaming', measured: q(stream.server.admission.p99), target: `< ${TARGETS.admissionP99Ms} ms`, pass: stream.server.admission.p99.ms < TARGETS.admissionP99Ms },
    ...load.map((s) => ({ name: `overhead P99, c=${s.connections}`, measured: ms(s.overhead.p99Ms), target: `< ${TARGETS.overheadP99Ms} ms`, pass: s.overhead.p99Ms < TARGETS.overheadP99Ms })),
    ...load.map((s) => ({ name: `billed requests/s, c=${s.connections}`, measured: s.gateway.okPerSecond.toFixed(0), target: `>= ${TARGETS.billedPerSecond}`, pass: s.gateway.okPerSecond >= TARGETS.billedPerSecond })),
  ];
  // A direct run is time-bounded: autocannon drops its in-flight requests at the deadline, which is no failure.
  const failures = [warmup, ...load.flatMap((s) => [s.direct, s.gateway])].reduce((n, f) => n + f.non2xx + f.errors + (f.target === 'gateway' ? f.abortedInFlight : 0), 0)
    + [streamDirect, streamGateway].reduce((n, f) => n + f.non2xx + f.errors + f.incomplete, 0);
  targets.push({ name: 'failed requests (non-2xx, errors, aborted, incomplete streams)', measured: String(failures), target: '0', pass: failures === 0 });

  const cpuModel = os.cpus()[0]?.model ?? 'unknown cpu';
  const header = `gateway benchmark: node ${process.version}, ${os.cpus().length} x ${cpuModel}, load avg ${loadAtStart.map((l) => l.toFixed(2)).join(' ')} at start, ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} at end; ${servicesNote}`;
  const report = { load, stream, warmup, temporal, billing, targets, gatewayLog: gw.problems, header };
  printReport(report);

  const resultsDir = path.join(loadConfig().rootDir, 'bench', 'results');
  fs.mkdirSync(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `gateway-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  const settings = { durationS: DURATION_S, connections: CONNECTIONS, warmupRequests: WARMUP_REQUESTS, streamRequests: STREAM_REQUESTS, streamConcurrency: STREAM_CONCURRENCY, model: MODEL, price: PRICE, body: CHAT_BODY };
  fs.writeFileSync(file, `${JSON.stringify({ finishedAt: new Date().toISOString(), settings, targetsGoal: TARGETS, ...report }, null, 2)}\n`);
  console.log(`\nresults written to ${path.relative(process.cwd(), file)}`);
  return targets.every((t) => t.pass) && billing.rowsMatch && billing.usedMatches && billing.spentMatches;
}

async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger('warn', 'bench');
  const adminToken = `bench-admin-${randomBytes(16).toString('hex')}`;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'billing-bench-'));
  fs.chmodSync(dataDir, 0o755); // the postgres user must reach its cluster directory
  let stack: RunningStack | undefined;
  let gateway: GatewayProcess | undefined;
  const cleanup = async (): Promise<void> => {
    await gateway?.stop().catch((err: unknown) => console.error('stopping the gateway failed:', err));
    await stack?.stop();
    if (!cli['keep-data']) fs.rmSync(dataDir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => void cleanup().finally(() => process.exit(130)));
  try {
    const started = performance.now();
    // Same options as `npm start` (persistent, Web UI on), only the ports and the data dir are ours.
    stack = await startStack(config, {
      dataDir,
      ports: { temporal: await freePort(), temporalUi: await freePort(), redis: await freePort(), postgres: await freePort() },
    }, log);
    gateway = await startGateway(stack, adminToken);
    const source = (name: string, set: string | undefined): string => `${name} ${set ? 'from env' : 'embedded'}`;
    const servicesNote = [source('Temporal', config.TEMPORAL_ADDRESS), source('Redis', config.REDIS_URL), source('PostgreSQL', config.DATABASE_URL)].join(', ');
    console.error(`stack and gateway ready in ${((performance.now() - started) / 1000).toFixed(1)} s (${servicesNote})`);
    const ok = await measure(gateway, adminToken, { databaseUrl: stack.databaseUrl, temporalAddress: stack.temporalAddress, namespace: config.TEMPORAL_NAMESPACE }, servicesNote);
    if (!ok) process.exitCode = 1;
  } finally {
    await cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
