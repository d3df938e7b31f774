/**
 * What a gateway benchmark run produced and how it is shown: the result types of each phase,
 * the plain-text tables printed to stdout, and the JSON file under `bench/results/` that holds
 * the same figures plus the settings of the run. Keeping the shape and its rendering in one
 * place means the printed tables and the JSON can never disagree about what was measured.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config';
import type { BillingCheck } from './billing-check';
import { CpuGroup, ThreadGroup, type CpuPhase } from './cpu';
import type { DatastorePerRequest } from './datastore-stats';
import type { FloorFigures } from './floor';
import type { GatewayProcess } from './gateway-process';
import type { LoadFigures } from './load';
import { CHAT_BODY, MODEL, PRICE, TARGETS, type BenchOptions } from './options';
import type { ServerFigures } from './server-metrics';
import type { LatencySummary, Quantile } from './statistics';
import type { StreamFigures } from './streams';
import type { HistoryBreakdown } from './temporal-histories';

/** One `--connections` value: the direct baseline, the gateway run, and what the gateway added. */
export interface LoadStep {
  connections: number;
  direct: LoadFigures;
  gateway: LoadFigures;
  overhead: { p50Ms: number; p99Ms: number; p50Ratio: number; p99Ratio: number };
  server: ServerFigures;
  cpu: { direct: CpuPhase; gateway: CpuPhase };
  /** The gateway process's CPU seconds by thread during the gateway run. */
  gatewayThreads: Record<ThreadGroup, number>;
  /** Redis commands and PostgreSQL transactions per 2xx response during the gateway run. */
  datastore: DatastorePerRequest;
  /** The Temporal floor at the same connections (absent with --skip-floor). Its process is counted in the `gateway` CPU group. */
  floor?: FloorStep;
}

/** One floor phase: the no-op workflow of the same shape, its CPU, and settlements that never ran. */
export interface FloorStep { figures: FloorFigures; cpu: CpuPhase; threads: Record<ThreadGroup, number>; unsettled: number }

export interface StreamStep {
  direct: StreamFigures;
  gateway: StreamFigures;
  ttfbOverhead: { p50Ms: number; p99Ms: number };
  server: ServerFigures;
  cpu: { direct: CpuPhase; gateway: CpuPhase };
}

/**
 * A measured phase on the monotonic clock (CLOCK_MONOTONIC, in microseconds), which V8's
 * `.cpuprofile` timestamps also use: `bench/cpu-profile-summary.ts --results` cuts a `--cpu-prof`
 * profile of process `pid` to this window and divides by `units` (2xx responses or floor workflows).
 */
export interface ProfileWindow { phase: string; pid: number | undefined; fromUs: number; toUs: number; units: number }

/** Now on the monotonic clock in microseconds (process.hrtime is CLOCK_MONOTONIC, as V8's profiler clock). */
export const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n);

export interface Target { name: string; measured: string; target: string; pass: boolean }

export interface BenchReport {
  load: LoadStep[];
  stream: StreamStep;
  warmup: LoadFigures;
  floorWarmup?: FloorFigures;
  profileWindows: ProfileWindow[];
  temporal: HistoryBreakdown[];
  billing: BillingCheck;
  targets: Target[];
  gatewayLog: GatewayProcess['problems'];
  header: string;
}

export const ms = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(1)} ms` : 'n/a');
const cell = (v: string | number, width: number): string => String(v).padStart(width);
export const verdict = (ok: boolean): string => (ok ? 'PASS' : 'FAIL');
/** A histogram quantile with the bucket it fell in ("> 10000 ms" past the last bucket). */
export const q = (x: Quantile): string => (x.beyondMs !== undefined ? `> ${x.beyondMs.toFixed(0)} ms` : `${ms(x.ms)} (le ${x.bucketMs ?? '?'})`);

/** A plain-text table (Markdown-shaped) with a title line; the first column left-aligned, the others right. */
export function table(title: string, header: string[], rows: Array<Array<string | number>>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i] ?? '').length)));
  const line = (cells: Array<string | number>): string => `| ${cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i] ?? 0) : cell(c, widths[i] ?? 0))).join(' | ')} |`;
  return [`\n${title}`, line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

export function printReport(r: BenchReport, opts: Pick<BenchOptions, 'streamRequests' | 'streamConcurrency'>): void {
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
  out.push(table(`Streaming (c=${opts.streamConcurrency}, ${opts.streamRequests} requests each): time to first body chunk`,
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
  const named = Object.keys(perRequest[0]?.[1].named ?? {});
  if (named.length > 0) {
    // A Temporal cluster (--cluster): what each server process burned per request (its share moves with its shards).
    out.push(table('CPU milliseconds per 2xx response of each named process (the Temporal server processes of --cluster)', ['phase', ...named],
      perRequest.map(([name, c, n]) => [name, ...named.map((p) => (1000 * (c.named[p] ?? 0) / n).toFixed(2))])));
  }
  out.push(table('Redis and PostgreSQL round trips per billed request (Redis INFO commandstats, pg_stat_database; before/after each gateway run, approximate)',
    ['phase', 'redis commands', 'by command', 'pg transactions', 'pg rows inserted', 'pg rows updated'],
    r.load.map((s) => [`gateway c=${s.connections}`, s.datastore.redisTotal.toFixed(1),
      Object.entries(s.datastore.redis).sort((a, b) => b[1] - a[1]).map(([cmd, n]) => `${cmd} ${n.toFixed(1)}`).join(', '),
      s.datastore.pg.transactions.toFixed(1), s.datastore.pg.inserted.toFixed(1), s.datastore.pg.updated.toFixed(1)])));
  out.push(...floorTables(r));
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

const perUnit = (cpuS: number, n: number): string => (n > 0 ? (1000 * cpuS / n).toFixed(2) : 'n/a');

/**
 * The Temporal floor and the gateway against it: the same workflow shape with no-op steps on the
 * same server in the same run. "Project adds" is the gateway process's CPU per billed request
 * minus the floor process's CPU per workflow; the mock upstream runs inside the gateway process,
 * so its share (measured by the direct run, which only the mock serves) is shown apart.
 */
function floorTables(r: BenchReport): string[] {
  const steps = r.load.filter((s): s is LoadStep & { floor: FloorStep } => s.floor !== undefined);
  if (steps.length === 0) return [];
  const out: string[] = [];
  const rows = [
    ...(r.floorWarmup ? [[`warm-up floor c=${r.floorWarmup.connections}`, r.floorWarmup, undefined] as const] : []),
    ...steps.map((s) => [`floor c=${s.connections}`, s.floor.figures, s.floor.unsettled] as const),
  ];
  out.push(table('Temporal floor: the billed-request workflow shape with no-op steps (same server, own task queue, worker + client in one child process; latency = update-with-start until the regular activity ran)',
    ['run', 'started', 'done', 'errors', 'seconds', 'workflows/s', 'P50', 'P90', 'P99', 'max', 'update P50', 'update P99', 'unsettled'],
    rows.map(([name, f, unsettled]) => [name, f.started, f.completed, f.errors, f.durationS.toFixed(1), f.perSecond.toFixed(1),
      ms(f.latency.p50Ms), ms(f.latency.p90Ms), ms(f.latency.p99Ms), ms(f.latency.maxMs), ms(f.admission.p50Ms), ms(f.admission.p99Ms), unsettled ?? '-'])));
  const lastError = [r.floorWarmup, ...steps.map((s) => s.floor.figures)].find((f) => f?.lastError !== undefined)?.lastError;
  if (lastError !== undefined) out.push(`floor error (last): ${lastError}`);
  out.push(table('CPU milliseconds per floor workflow ("node" = the floor process: worker + client; the idle gateway counts in "other")',
    ['phase', 'temporal', 'node', 'bench', 'redis', 'postgres', 'other', 'ours', 'machine busy'],
    steps.map((s) => {
      const c = s.floor.cpu;
      const n = s.floor.figures.completed;
      const ours = Object.values(c.cpuS).reduce((sum, v) => sum + v, 0);
      return [`floor c=${s.connections}`, perUnit(c.cpuS.temporal, n), perUnit(c.cpuS.gateway, n), perUnit(c.cpuS.bench, n), perUnit(c.cpuS.redis, n),
        perUnit(c.cpuS.postgres, n), perUnit(c.cpuS.other, n), perUnit(ours, n), `${(c.machineBusyS / c.wallS).toFixed(2)} cores`];
    })));
  out.push(table('Gateway against its Temporal floor (same connections, same server, same run; CPU in ms per billed request / per floor workflow)',
    ['connections', 'gateway 2xx/s', 'floor wf/s', 'gateway / floor', 'gateway P50', 'floor P50', 'temporal gw / floor', 'node gw / floor', 'project adds (node)', 'of it mock upstream', 'project adds w/o mock', 'redis + pg (gw)'],
    steps.map((s) => {
      const g = s.cpu.gateway;
      const f = s.floor.cpu;
      const n = s.gateway.ok2xx;
      const m = s.floor.figures.completed;
      const nodeGw = n > 0 ? 1000 * g.cpuS.gateway / n : NaN;
      const nodeFloor = m > 0 ? 1000 * f.cpuS.gateway / m : NaN;
      // The direct run is served by the mock upstream inside the gateway process: its CPU per response is the mock's share.
      const mock = s.direct.ok2xx > 0 ? 1000 * s.cpu.direct.cpuS.gateway / s.direct.ok2xx : NaN;
      const tGw = n > 0 ? 1000 * g.cpuS.temporal / n : NaN;
      const tFloor = m > 0 ? 1000 * f.cpuS.temporal / m : NaN;
      return [s.connections, s.gateway.okPerSecond.toFixed(1), s.floor.figures.perSecond.toFixed(1),
        `${(s.gateway.okPerSecond / s.floor.figures.perSecond).toFixed(2)}x`, ms(s.gateway.latency.p50Ms), ms(s.floor.figures.latency.p50Ms),
        `${tGw.toFixed(1)} / ${tFloor.toFixed(1)}`, `${nodeGw.toFixed(1)} / ${nodeFloor.toFixed(1)}`, `${(nodeGw - nodeFloor).toFixed(1)} ms`,
        `${mock.toFixed(1)} ms`, `${(nodeGw - nodeFloor - mock).toFixed(1)} ms`, perUnit(g.cpuS.redis + g.cpuS.postgres, n)];
    })));
  const threadGroups = Object.values(ThreadGroup);
  out.push(table('Node process CPU by thread, ms per billed request / per floor workflow (main = JavaScript main thread; temporal core = the SDK\'s Rust threads; other = workflow thread, GC helpers, libuv pool)',
    ['phase', ...threadGroups, 'all'],
    steps.flatMap((s) => [[`gateway c=${s.connections}`, s.gatewayThreads, s.gateway.ok2xx] as const, [`floor c=${s.connections}`, s.floor.threads, s.floor.figures.completed] as const])
      .map(([name, t, n]) => [name, ...threadGroups.map((g) => perUnit(t[g], n)), perUnit(threadGroups.reduce((sum, g) => sum + t[g], 0), n)])));
  return out;
}

/** Writes the report and the run's settings to `bench/results/gateway-<timestamp>.json` and says where. */
export function writeReportJson(report: BenchReport, opts: BenchOptions): string {
  const resultsDir = path.join(loadConfig().rootDir, 'bench', 'results');
  fs.mkdirSync(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `gateway-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  const settings = { durationS: opts.durationS, connections: opts.connections, warmupRequests: opts.warmupRequests, streamRequests: opts.streamRequests, streamConcurrency: opts.streamConcurrency, model: MODEL, price: PRICE, body: CHAT_BODY };
  fs.writeFileSync(file, `${JSON.stringify({ finishedAt: new Date().toISOString(), settings, targetsGoal: TARGETS, ...report }, null, 2)}\n`);
  console.log(`\nresults written to ${path.relative(process.cwd(), file)}`);
  return file;
}
