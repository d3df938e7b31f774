/**
 * The isolation benchmark's measured part: tenants and keys through the admin HTTP API, then each
 * scenario in order: its flood starts, ramps for `--ramp` seconds, the victim measures once per
 * `--victim-connections` value while the flood goes on, the flood stops, and the benchmark waits
 * until no workflow runs any more, so one scenario's backlog does not land in the next one.
 */
import { performance } from 'node:perf_hooks';
import { Client, Connection } from '@temporalio/client';
import { cpuBetween, cpuSnapshot, type CpuPhase } from '../gateway/cpu';
import { adminCall, BenchSetupError, type GatewayProcess } from '../gateway/gateway-process';
import { HUGE_QUOTA_MICROS, MODEL, PRICE } from '../gateway/options';
import { monotonicUs } from '../gateway/report';
import type { FloodProcess, FloodSpec, FloodWindowFigures } from './flood';
import { REQUEST_TIMEOUT_S, ScenarioName, TINY_CHAT_BODY, type IsolationOptions } from './options';
import { runVictim, type VictimFigures } from './victim';

export type FairnessLabel = 'on' | 'off' | 'unknown';

export interface ScenarioPhase { victim: VictimFigures; flood?: FloodWindowFigures; cpu: CpuPhase }

export interface ScenarioResult {
  name: ScenarioName;
  /** What floods, e.g. "50 connections: GET /healthz". */
  label: string;
  fairness: FairnessLabel;
  /** Set when the scenario could not run (e.g. rate limits not built yet). */
  unavailable?: string;
  phases: ScenarioPhase[];
  /** The flood over every victim phase of the scenario together. */
  flood?: FloodWindowFigures;
  /** Seconds until no workflow was running after the flood stopped. */
  drainS: number;
}

/** The tenants and keys of one stack. */
export interface IsolationTenants {
  victimKey: string;
  brokeKey: string;
  /** Undefined when the API refused the rpm_limit field. */
  limitedKey?: string;
  limitedUnavailable?: string;
  payingKey: string;
  /** What a chat completion of the out-of-quota tenant answered before the flood (expected 429 insufficient_quota). */
  refusalProbe: { status: number; code: string | undefined };
}

async function tenantWithKey(gw: GatewayProcess, token: string, id: string, quota: number, keyBody: Record<string, unknown> = { name: 'bench' }): Promise<{ key?: string; refused?: string }> {
  await adminCall(gw.apiUrl, token, 'POST', '/admin/tenants', { id, name: `isolation ${id}`, quota_limit_micros: quota });
  const res = await fetch(`${gw.apiUrl}/admin/tenants/${id}/api-keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(keyBody),
  });
  const text = await res.text();
  if (res.status === 400) return { refused: `HTTP 400 ${text.slice(0, 300)}` };
  if (!res.ok) throw new BenchSetupError(`POST /admin/tenants/${id}/api-keys: HTTP ${res.status} ${text}`);
  return { key: (JSON.parse(text) as { key: string }).key };
}

export async function setupTenants(gw: GatewayProcess, token: string, opts: IsolationOptions): Promise<IsolationTenants> {
  const suffix = `${Date.now().toString(36)}-${process.pid}`;
  await adminCall(gw.apiUrl, token, 'PUT', `/admin/models/${MODEL}`, PRICE);
  const need = (r: { key?: string; refused?: string }, what: string): string => {
    if (r.key === undefined) throw new BenchSetupError(`${what}: ${r.refused ?? 'no key'}`);
    return r.key;
  };
  const victimKey = need(await tenantWithKey(gw, token, `victim-${suffix}`, HUGE_QUOTA_MICROS), 'victim key');
  const brokeKey = need(await tenantWithKey(gw, token, `broke-${suffix}`, 0), 'out-of-quota key');
  const limited = await tenantWithKey(gw, token, `limited-${suffix}`, HUGE_QUOTA_MICROS, { name: 'bench', rpm_limit: opts.rpmLimit });
  const payingKey = need(await tenantWithKey(gw, token, `paying-${suffix}`, HUGE_QUOTA_MICROS), 'paying key');

  // One request each first: a broken setup should fail loudly, not as a 100% error rate.
  const chat = (key: string): Promise<Response> => fetch(`${gw.apiUrl}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body: JSON.stringify(TINY_CHAT_BODY),
  });
  const victim = await chat(victimKey);
  if (victim.status !== 200) throw new BenchSetupError(`victim probe: HTTP ${victim.status} ${await victim.text()}`);
  await victim.text();
  const refused = await chat(brokeKey);
  const refusedBody = (await refused.json().catch(() => ({}))) as { error?: { code?: string } };
  return {
    victimKey,
    brokeKey,
    limitedKey: limited.key,
    limitedUnavailable: limited.refused === undefined ? undefined : `rate limits not available (POST /admin/tenants/:id/api-keys with "rpm_limit": ${limited.refused})`,
    payingKey,
    refusalProbe: { status: refused.status, code: refusedBody.error?.code },
  };
}

/** Waits (up to 120 s) until no workflow of the namespace is running; answers the seconds it took. */
async function drainWorkflows(client: Client): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < 120_000) {
    const { count } = await client.workflow.count('ExecutionStatus = "Running"');
    if (count === 0) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  return (performance.now() - started) / 1000;
}

export interface ScenarioContext {
  gw: GatewayProcess;
  flood: FloodProcess;
  tenants: IsolationTenants;
  temporalAddress: string;
  namespace: string;
  fairness: FairnessLabel;
}

function floodOf(name: ScenarioName, ctx: ScenarioContext, opts: IsolationOptions): { label: string; spec?: FloodSpec; unavailable?: string } {
  const chatUrl = `${ctx.gw.apiUrl}/v1/chat/completions`;
  const chat = (key: string, connections: number): FloodSpec => ({
    url: chatUrl, method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body: JSON.stringify(TINY_CHAT_BODY), connections, timeoutS: REQUEST_TIMEOUT_S,
  });
  switch (name) {
    case ScenarioName.solo:
      return { label: 'no flood' };
    case ScenarioName.healthz:
      return { label: `${opts.floodConnections} connections: GET /healthz`, spec: { url: `${ctx.gw.apiUrl}/healthz`, method: 'GET', headers: {}, connections: opts.floodConnections, timeoutS: REQUEST_TIMEOUT_S } };
    case ScenarioName.refusal:
      return { label: `${opts.floodConnections} connections: out-of-quota tenant (quota 0), chat completions`, spec: chat(ctx.tenants.brokeKey, opts.floodConnections) };
    case ScenarioName.rateLimited:
      return ctx.tenants.limitedKey === undefined
        ? { label: `${opts.floodConnections} connections: rate-limited tenant (key rpm_limit ${opts.rpmLimit})`, unavailable: ctx.tenants.limitedUnavailable }
        : { label: `${opts.floodConnections} connections: rate-limited tenant (key rpm_limit ${opts.rpmLimit}), chat completions`, spec: chat(ctx.tenants.limitedKey, opts.floodConnections) };
    case ScenarioName.paying:
      return { label: `${opts.payingConnections} connections: paying tenant (plenty of quota), chat completions`, spec: chat(ctx.tenants.payingKey, opts.payingConnections) };
  }
}

export async function runScenarios(ctx: ScenarioContext, names: ScenarioName[], opts: IsolationOptions): Promise<ScenarioResult[]> {
  const connection = await Connection.connect({ address: ctx.temporalAddress });
  const client = new Client({ connection, namespace: ctx.namespace });
  const chatUrl = `${ctx.gw.apiUrl}/v1/chat/completions`;
  const results: ScenarioResult[] = [];
  try {
    for (const name of names) {
      const { label, spec, unavailable } = floodOf(name, ctx, opts);
      if (unavailable !== undefined) {
        console.error(`${name}: ${unavailable}`);
        results.push({ name, label, fairness: ctx.fairness, unavailable, phases: [], drainS: 0 });
        continue;
      }
      console.error(`${name} (fairness ${ctx.fairness}): ${label}; victim at ${opts.victimConnections.join(', ')} connection(s), ${opts.durationS} s each`);
      if (spec) {
        await ctx.flood.start(spec);
        await new Promise((r) => setTimeout(r, opts.rampS * 1000));
      }
      const phases: ScenarioPhase[] = [];
      const fromUs = monotonicUs();
      let toUs = fromUs;
      try {
        for (const connections of opts.victimConnections) {
          const c0 = cpuSnapshot(ctx.gw.child.pid);
          const from = monotonicUs();
          const victim = await runVictim(chatUrl, ctx.tenants.victimKey, connections, opts.durationS);
          const to = monotonicUs();
          toUs = to;
          const c1 = cpuSnapshot(ctx.gw.child.pid);
          phases.push({ victim, flood: spec ? await ctx.flood.stats(from, to) : undefined, cpu: cpuBetween(c0, c1) });
        }
      } finally {
        await ctx.flood.halt();
      }
      // Every victim phase together (the ramp before them is left out).
      const flood = spec ? await ctx.flood.stats(fromUs, toUs) : undefined;
      const drainS = await drainWorkflows(client);
      results.push({ name, label, fairness: ctx.fairness, phases, flood, drainS });
    }
  } finally {
    await connection.close();
  }
  return results;
}
