/**
 * The measured part of a gateway benchmark run, in order: benchmark data through the admin API,
 * one probe each way, the warm-up (gateway, then the Temporal floor), a direct + floor + gateway load
 * step per `--connections` value, the
 * streaming phase, the billing-exactness check, the Temporal history sample, then the targets,
 * the tables and the JSON file. It counts every 2xx the gateway answered, because that count is
 * what the ledger must match exactly; it returns whether every target and billing check passed.
 */
import os from 'node:os';
import { verifyBilling } from './billing-check';
import { cpuBetween, cpuSnapshot, threadsBetween, threadSnapshot } from './cpu';
import { datastorePerRequest, datastoreSnapshot } from './datastore-stats';
import type { FloorFigures, FloorProcess } from './floor';
import { adminCall, BenchSetupError, type GatewayProcess } from './gateway-process';
import { runLoad, type LoadFigures } from './load';
import { CHAT_BODY, HUGE_QUOTA_MICROS, MODEL, PRICE, TARGETS, type BenchOptions } from './options';
import { ms, monotonicUs, printReport, q, writeReportJson, type LoadStep, type ProfileWindow, type StreamStep, type Target } from './report';
import { scrape, serverDelta } from './server-metrics';
import { runStreams, type StreamFigures } from './streams';
import { temporalBreakdown, type PhaseWindow } from './temporal-histories';

export interface MeasuredServices { databaseUrl: string; redisUrl: string; temporalAddress: string; namespace: string }

/** The issue-3 targets plus "no request failed", judged from the measured phases. */
function judgeTargets(warmup: LoadFigures, load: LoadStep[], stream: StreamStep, streams: StreamFigures[]): Target[] {
  const targets: Target[] = [
    ...load.map((s) => ({ name: `admission P99, gateway c=${s.connections}`, measured: q(s.server.admission.p99), target: `< ${TARGETS.admissionP99Ms} ms`, pass: s.server.admission.p99.ms < TARGETS.admissionP99Ms })),
    { name: 'admission P99, streaming', measured: q(stream.server.admission.p99), target: `< ${TARGETS.admissionP99Ms} ms`, pass: stream.server.admission.p99.ms < TARGETS.admissionP99Ms },
    ...load.map((s) => ({ name: `overhead P99, c=${s.connections}`, measured: ms(s.overhead.p99Ms), target: `< ${TARGETS.overheadP99Ms} ms`, pass: s.overhead.p99Ms < TARGETS.overheadP99Ms })),
    ...load.map((s) => ({ name: `billed requests/s, c=${s.connections}`, measured: s.gateway.okPerSecond.toFixed(0), target: `>= ${TARGETS.billedPerSecond}`, pass: s.gateway.okPerSecond >= TARGETS.billedPerSecond })),
  ];
  // A direct run is time-bounded: autocannon drops its in-flight requests at the deadline, which is no failure.
  const failures = [warmup, ...load.flatMap((s) => [s.direct, s.gateway])].reduce((n, f) => n + f.non2xx + f.errors + (f.target === 'gateway' ? f.abortedInFlight : 0), 0)
    + streams.reduce((n, f) => n + f.non2xx + f.errors + f.incomplete, 0);
  targets.push({ name: 'failed requests (non-2xx, errors, aborted, incomplete streams)', measured: String(failures), target: '0', pass: failures === 0 });
  return targets;
}

export async function measure(gw: GatewayProcess, token: string, services: MeasuredServices, servicesNote: string, opts: BenchOptions, floor?: FloorProcess): Promise<boolean> {
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

  console.error(`warm-up: ${opts.warmupRequests} gateway requests`);
  const warmup = await runLoad({ target: 'gateway', url: gatewayChat, headers: auth, connections: Math.min(50, opts.warmupRequests), amount: opts.warmupRequests, capS: 120 });
  gateway2xx += warmup.ok2xx;
  let plannedRate = warmup.okPerSecond;
  let floorWarmup: FloorFigures | undefined;
  if (floor) {
    console.error(`warm-up: ${opts.warmupRequests} floor workflows`);
    floorWarmup = await floor.run({ connections: Math.min(50, opts.warmupRequests), amount: opts.warmupRequests });
    await floor.drain();
  }

  const durationS = opts.durationS;
  const load: LoadStep[] = [];
  const windows: PhaseWindow[] = [];
  // Monotonic-clock windows of the measured phases: bench/cpu-profile-summary.ts cuts the --cpu-prof profiles to them.
  const profileWindows: ProfileWindow[] = [];
  for (const connections of opts.connections) {
    console.error(`direct c=${connections}: ${durationS} s`);
    const c0 = cpuSnapshot(gw.child.pid);
    const direct = await runLoad({ target: 'direct', url: directChat, headers: {}, connections, durationS, capS: durationS + 30 });
    const c1 = cpuSnapshot(gw.child.pid);
    let floorStep: LoadStep['floor'];
    if (floor) {
      // The floor process is the Node process under test here: cpuSnapshot counts it in the "gateway" group (the idle gateway lands in "other").
      console.error(`floor c=${connections}: ${durationS} s`);
      const f0 = cpuSnapshot(floor.child.pid);
      const t0 = threadSnapshot(floor.child.pid);
      const fromUs = monotonicUs();
      const figures = await floor.run({ connections, durationS });
      profileWindows.push({ phase: `floor c=${connections}`, pid: floor.child.pid, fromUs, toUs: monotonicUs(), units: figures.completed });
      const t1 = threadSnapshot(floor.child.pid);
      const f1 = cpuSnapshot(floor.child.pid);
      floorStep = { figures, cpu: cpuBetween(f0, f1), threads: threadsBetween(t0, t1), unsettled: await floor.drain() };
    }
    const amount = Math.max(connections * 2, Math.round(plannedRate * durationS));
    console.error(`gateway c=${connections}: ${amount} requests (about ${durationS} s at ${plannedRate.toFixed(0)}/s)`);
    const before = await scrape(gw.apiUrl);
    const d0 = await datastoreSnapshot(services.redisUrl, services.databaseUrl);
    const c2 = cpuSnapshot(gw.child.pid);
    const g0 = threadSnapshot(gw.child.pid);
    const fromMs = Date.now();
    const fromUs = monotonicUs();
    const gateway = await runLoad({ target: 'gateway', url: gatewayChat, headers: auth, connections, amount, capS: durationS * 3 + 10 });
    windows.push({ phase: `gateway c=${connections}`, fromMs, toMs: Date.now() });
    profileWindows.push({ phase: `gateway c=${connections}`, pid: gw.child.pid, fromUs, toUs: monotonicUs(), units: gateway.ok2xx });
    const gatewayThreads = threadsBetween(g0, threadSnapshot(gw.child.pid));
    const c3 = cpuSnapshot(gw.child.pid);
    const server = serverDelta(before, await scrape(gw.apiUrl));
    const datastore = datastorePerRequest(d0, await datastoreSnapshot(services.redisUrl, services.databaseUrl), gateway.ok2xx);
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
      gatewayThreads,
      datastore,
      floor: floorStep,
    });
  }

  console.error(`streaming: ${opts.streamRequests} requests at c=${opts.streamConcurrency}, direct then gateway`);
  const s0 = cpuSnapshot(gw.child.pid);
  const streamDirect = await runStreams('direct', directChat, {}, opts.streamRequests, opts.streamConcurrency);
  const s1 = cpuSnapshot(gw.child.pid);
  const streamBefore = await scrape(gw.apiUrl);
  const streamFromMs = Date.now();
  const streamFromUs = monotonicUs();
  const streamGateway = await runStreams('gateway', gatewayChat, auth, opts.streamRequests, opts.streamConcurrency);
  windows.push({ phase: 'streaming', fromMs: streamFromMs, toMs: Date.now() });
  profileWindows.push({ phase: 'stream gateway', pid: gw.child.pid, fromUs: streamFromUs, toUs: monotonicUs(), units: streamGateway.ok2xx });
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
  const targets = judgeTargets(warmup, load, stream, [streamDirect, streamGateway]);

  const cpuModel = os.cpus()[0]?.model ?? 'unknown cpu';
  const header = `gateway benchmark: node ${process.version}, ${os.cpus().length} x ${cpuModel}, load avg ${loadAtStart.map((l) => l.toFixed(2)).join(' ')} at start, ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} at end; ${servicesNote}`;
  const report = { load, stream, warmup, floorWarmup, profileWindows, temporal, billing, targets, gatewayLog: gw.problems, header };
  printReport(report, opts);
  writeReportJson(report, opts);
  return targets.every((t) => t.pass) && billing.rowsMatch && billing.usedMatches && billing.spentMatches;
}
