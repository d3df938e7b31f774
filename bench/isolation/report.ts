/**
 * What an isolation benchmark run produced and how it is shown: the scenarios' figures as tables
 * (flood responses/s by status and latency; the victim's billed requests/s, P50/P99 and its P50
 * against the solo and /healthz-flood references; CPU per process group), the issue-7 targets as
 * PASS/FAIL rows, and the JSON file under bench/results/.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config';
import { CpuGroup } from '../gateway/cpu';
import type { GatewayProcess } from '../gateway/gateway-process';
import { ms, table } from '../gateway/report';
import type { FloodWindowFigures } from './flood';
import { ScenarioName, TARGETS, TINY_CHAT_BODY, type IsolationOptions } from './options';
import type { ScenarioResult } from './scenarios';

export interface IsolationTarget { name: string; measured: string; goal: string; result: 'PASS' | 'FAIL' | 'n/a' }

export interface IsolationReport {
  header: string;
  fairnessNotes: string[];
  refusalProbes: Array<{ fairness: string; status: number; code: string | undefined }>;
  scenarios: ScenarioResult[];
  targets: IsolationTarget[];
  gatewayLogs: Array<GatewayProcess['problems']>;
}

const ratio = (a: number, b: number | undefined): string => (b !== undefined && Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}x` : 'n/a');

/** The victim's P50 at `connections` in the named scenario (the one with `fairness` first, else any). */
function victimP50(results: ScenarioResult[], name: ScenarioName, connections: number, fairness?: string): number | undefined {
  const candidates = results.filter((r) => r.name === name && r.unavailable === undefined);
  const chosen = candidates.find((r) => r.fairness === fairness) ?? candidates[0];
  return chosen?.phases.find((p) => p.victim.connections === connections)?.victim.latency.p50Ms;
}

function floodCell(f: FloodWindowFigures | undefined): string {
  if (!f) return '-';
  const parts = Object.entries(f.byStatus).sort((a, b) => b[1].count - a[1].count).map(([status, s]) => `${status}: ${s.perSecond.toFixed(1)}/s`);
  if (f.errors > 0) parts.push(`errors: ${(f.errors / f.seconds).toFixed(1)}/s`);
  return parts.join(', ') || 'no responses';
}

export function judgeTargets(results: ScenarioResult[], opts: IsolationOptions): IsolationTarget[] {
  const targets: IsolationTarget[] = [];
  const ok = (r: ScenarioResult | undefined): r is ScenarioResult => r !== undefined && r.unavailable === undefined && r.flood !== undefined;
  const healthz = results.find((r) => r.name === ScenarioName.healthz);
  const refusal = results.find((r) => r.name === ScenarioName.refusal);
  const healthzRate = ok(healthz) ? (healthz.flood?.byStatus['200']?.perSecond ?? 0) : undefined;
  const refusals = ok(refusal) ? refusal.flood?.byStatus['429'] : undefined;
  const refusalRate = ok(refusal) ? (refusals?.perSecond ?? 0) : undefined;
  const goalRate = `>= ${TARGETS.refusalRateShareOfHealthz} x /healthz rate${healthzRate !== undefined ? ` (${(TARGETS.refusalRateShareOfHealthz * healthzRate).toFixed(0)}/s)` : ''}`;
  targets.push(refusalRate !== undefined && healthzRate !== undefined
    ? { name: 'refusals/s under the out-of-quota flood', measured: `${refusalRate.toFixed(1)}/s (${ratio(refusalRate, healthzRate)} of ${healthzRate.toFixed(0)}/s)`, goal: goalRate, result: refusalRate >= TARGETS.refusalRateShareOfHealthz * healthzRate ? 'PASS' : 'FAIL' }
    : { name: 'refusals/s under the out-of-quota flood', measured: 'not measured', goal: goalRate, result: 'n/a' });
  targets.push(refusals !== undefined
    ? { name: 'refusal (429) P99 under the out-of-quota flood', measured: ms(refusals.latency.p99Ms), goal: `< ${TARGETS.refusalP99Ms} ms`, result: refusals.latency.p99Ms < TARGETS.refusalP99Ms ? 'PASS' : 'FAIL' }
    : { name: 'refusal (429) P99 under the out-of-quota flood', measured: 'no 429 measured', goal: `< ${TARGETS.refusalP99Ms} ms`, result: ok(refusal) ? 'FAIL' : 'n/a' });
  for (const c of opts.victimConnections) {
    const underRefusal = victimP50(results, ScenarioName.refusal, c);
    const underHealthz = victimP50(results, ScenarioName.healthz, c);
    const goal = `<= ${TARGETS.victimP50RefusalVsHealthz}x`;
    targets.push(underRefusal !== undefined && underHealthz !== undefined
      ? { name: `victim P50 c=${c}, refusal flood / healthz flood`, measured: `${ms(underRefusal)} / ${ms(underHealthz)} = ${ratio(underRefusal, underHealthz)}`, goal, result: underRefusal <= TARGETS.victimP50RefusalVsHealthz * underHealthz ? 'PASS' : 'FAIL' }
      : { name: `victim P50 c=${c}, refusal flood / healthz flood`, measured: 'not measured', goal, result: 'n/a' });
  }
  const paying = results.filter((r) => r.name === ScenarioName.paying && r.unavailable === undefined);
  const fairOn = paying.find((r) => r.fairness === 'on');
  const judged = fairOn ?? paying[0];
  for (const c of opts.victimConnections) {
    const fairness = judged?.fairness ?? 'on';
    const underPaying = judged?.phases.find((p) => p.victim.connections === c)?.victim.latency.p50Ms;
    const solo = victimP50(results, ScenarioName.solo, c, fairness);
    const name = `victim P50 c=${c}, paying flood (fairness ${fairness}) / solo`;
    const goal = `<= ${TARGETS.victimP50PayingVsSolo}x, fairness on`;
    if (underPaying === undefined || solo === undefined) targets.push({ name, measured: 'not measured', goal, result: 'n/a' });
    else if (fairness !== 'on') targets.push({ name, measured: `${ms(underPaying)} / ${ms(solo)} = ${ratio(underPaying, solo)}`, goal, result: 'n/a' });
    else targets.push({ name, measured: `${ms(underPaying)} / ${ms(solo)} = ${ratio(underPaying, solo)}`, goal, result: underPaying <= TARGETS.victimP50PayingVsSolo * solo ? 'PASS' : 'FAIL' });
  }
  return targets;
}

export function printIsolationReport(r: IsolationReport): void {
  const out: string[] = [r.header, ...r.fairnessNotes.map((n) => `fairness: ${n}`)];
  for (const p of r.refusalProbes) out.push(`out-of-quota probe (fairness ${p.fairness}): HTTP ${p.status} ${p.code ?? ''}`);
  const rows: Array<Array<string | number>> = [];
  for (const s of r.scenarios) {
    if (s.unavailable !== undefined) {
      rows.push([s.name, s.fairness, '-', s.unavailable, '', '', '', '', '', '', '', '']);
      continue;
    }
    for (const p of s.phases) {
      const c = p.victim.connections;
      const failed = Object.entries(p.victim.statusCodes).filter(([code]) => !code.startsWith('2')).reduce((n, [, v]) => n + v, 0) + p.victim.errors;
      rows.push([s.name, s.fairness, c, floodCell(p.flood), ms(p.flood?.latency.p50Ms ?? NaN), ms(p.flood?.latency.p99Ms ?? NaN),
        p.victim.okPerSecond.toFixed(1), failed, ms(p.victim.latency.p50Ms), ms(p.victim.latency.p99Ms),
        ratio(p.victim.latency.p50Ms, victimP50(r.scenarios, ScenarioName.solo, c, s.fairness)), ratio(p.victim.latency.p50Ms, victimP50(r.scenarios, ScenarioName.healthz, c))]);
    }
  }
  out.push(table('Isolation: the victim (plenty of quota, tiny non-streaming chat completions, closed loop) while another tenant floods; flood figures are for the victim\'s measurement window',
    ['scenario', 'fairness', 'victim c', 'flood responses/s by status', 'flood P50', 'flood P99', 'victim 2xx/s', 'victim failed', 'victim P50', 'victim P99', 'P50 / solo', 'P50 / healthz'], rows));
  out.push(table('Floods (all victim phases of a scenario together; latency per status)', ['scenario', 'fairness', 'flood', 'seconds', 'status', 'responses/s', 'P50', 'P99', 'drain after (s)'],
    r.scenarios.filter((s) => s.flood !== undefined).flatMap((s) => Object.entries(s.flood?.byStatus ?? {}).map(([status, f]) => [s.name, s.fairness, s.label, (s.flood?.seconds ?? 0).toFixed(1), status, f.perSecond.toFixed(1), ms(f.latency.p50Ms), ms(f.latency.p99Ms), s.drainS.toFixed(1)]))));
  const groups = Object.values(CpuGroup);
  out.push(table(`CPU seconds per process group during each victim phase (${os.cpus().length} cores; "bench" = the victim's client, "other" = the flood generator; "not ours" = machine busy minus all of these)`,
    ['scenario', 'fairness', 'victim c', 'wall s', ...groups, 'not ours', 'machine busy'],
    r.scenarios.flatMap((s) => s.phases.map((p) => {
      const ours = groups.reduce((sum, g) => sum + p.cpu.cpuS[g], 0);
      return [s.name, s.fairness, p.victim.connections, p.cpu.wallS.toFixed(1), ...groups.map((g) => p.cpu.cpuS[g].toFixed(1)), Math.max(0, p.cpu.machineBusyS - ours).toFixed(1), `${(p.cpu.machineBusyS / p.cpu.wallS).toFixed(2)} cores`];
    }))));
  out.push(table('Targets (issue 7)', ['target', 'measured', 'goal', 'result'], r.targets.map((t) => [t.name, t.measured, t.goal, t.result])));
  // A flood's requests in flight when it stops are dropped by autocannon: the gateway logs those as warnings (client gone, 502 unsent).
  const problems = r.gatewayLogs.map((g, i) => `gateway ${i + 1}: ${g.warn} warn, ${g.error} error${g.last.length > 0 ? `; last:\n  ${g.last.map((l) => l.slice(0, 300)).join('\n  ')}` : ''}`);
  out.push(`\ngateway log lines (a stopped flood's dropped requests log warnings): ${problems.join('\n')}`);
  console.log(out.join('\n'));
}

export function writeIsolationJson(report: IsolationReport, opts: IsolationOptions): string {
  const resultsDir = path.join(loadConfig().rootDir, 'bench', 'results');
  fs.mkdirSync(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `isolation-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, `${JSON.stringify({ finishedAt: new Date().toISOString(), settings: { ...opts, body: TINY_CHAT_BODY }, targetsGoal: TARGETS, ...report }, null, 2)}\n`);
  console.log(`\nresults written to ${path.relative(process.cwd(), file)}`);
  return file;
}
