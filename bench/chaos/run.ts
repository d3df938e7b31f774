/**
 * One soak run (issue 14, M12): the system, the subjects, the mixed load with faults
 * striking at seeded moments, quiescence, one sweep, consistency check, sync and export
 * run, then the invariants. `npm run chaos` and test/chaos/chaos-soak.test.ts both call
 * runChaos(); it returns the figures and the violations, it does not exit.
 */
import { createRedis } from '../../src/redis/client';
import type { MaintenanceJob } from '../../src/workflows/maintenance-jobs';
import { injectFault, faultPlan, type FaultRecord } from './faults';
import { checkInvariants, type InvariantResult } from './invariants';
import { createSender, pickKind, REQUEST_KINDS, subjectSpecs, type ClientRecord, type KindContext, type Subject, type SubjectSpec } from './load';
import { seededRandom, type ChaosOptions } from './options';
import { CHAOS_MODEL, CHAOS_PRICE, SWEEP_PENDING_AFTER_SECONDS, startSoakSystem, type SoakSystem } from './system';

export interface ConsistencyFigures { status: string; tenant_drift_micros: number; apikey_drift_micros: number; drifted: unknown[]; healed: boolean }

export interface ChaosResult {
  options: ChaosOptions;
  records: ClientRecord[];
  faults: FaultRecord[];
  consistency?: ConsistencyFigures;
  invariants: InvariantResult[];
  /** Everything that failed: invariant violations, faults the system did not recover from, crash loops. */
  violations: string[];
  loadSeconds: number;
  quiesceSeconds: number;
}

async function setUp(system: SoakSystem, specs: SubjectSpec[], runId: string): Promise<{ subjects: Subject[]; probe: Subject }> {
  const expectOk = (what: string, r: { status: number; body: unknown }): void => {
    if (r.status >= 300) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.body)}`);
  };
  expectOk('model price', await system.admin('PUT', `/admin/models/${CHAOS_MODEL}`, CHAOS_PRICE));
  const [good, flaky] = system.upstreams;
  expectOk('channel good', await system.admin('PUT', '/admin/channels/good', { base_url: `http://127.0.0.1:${good!.port}/v1`, models: ['*'], weight: 1, enabled: true }));
  expectOk('channel flaky', await system.admin('PUT', '/admin/channels/flaky', { base_url: `http://127.0.0.1:${flaky!.port}/v1`, models: ['*'], weight: 1, enabled: true }));
  const subjects: Subject[] = [];
  const all = [...specs, { tenantId: `probe-${runId}`, tenant: { quota_limit_micros: 1_000_000_000 }, keys: [{ name: 'probe', exercises: 'probe' }] }];
  for (const spec of all) {
    expectOk(`tenant ${spec.tenantId}`, await system.admin('POST', '/admin/tenants', { id: spec.tenantId, name: spec.tenantId, ...spec.tenant }));
    for (const k of spec.keys) {
      const { name, exercises, ...limits } = k;
      const made = await system.admin<{ id: string; key: string }>('POST', `/admin/tenants/${spec.tenantId}/api-keys`, { name, ...limits });
      expectOk(`key ${name}`, made);
      subjects.push({ tenantId: spec.tenantId, apiKeyId: made.body.id, key: made.body.key, exercises });
    }
  }
  return { subjects: subjects.filter((s) => s.exercises !== 'probe'), probe: subjects.find((s) => s.exercises === 'probe')! };
}

/** Runs a maintenance job now and waits for its workflow to finish. */
async function runJob(system: SoakSystem, job: MaintenanceJob): Promise<void> {
  const started = await system.admin<{ workflow_id: string }>('POST', `/admin/sync/${job}`);
  if (started.status !== 202) throw new Error(`sync ${job}: ${started.status} ${JSON.stringify(started.body)}`);
  await system.temporal.workflow.getHandle(started.body.workflow_id).result();
}

export async function runChaos(options: ChaosOptions, log: (line: string) => void = () => undefined): Promise<ChaosResult> {
  const rng = seededRandom(options.seed);
  const faultRng = seededRandom(options.seed ^ 0x5eed);
  const runId = options.seed.toString(36);
  const system = await startSoakSystem(log, options.stackLogLevel, options.topology);
  const redis = createRedis(system.endpoints.redisUrl);
  redis.on('error', () => undefined); // Redis is killed on purpose; the checks run after it is back
  try {
    const specs = subjectSpecs(options.requests, runId);
    const { subjects, probe } = await setUp(system, specs, runId);
    const sender = createSender(system.apiUrl);
    const records: ClientRecord[] = [];
    let keySeq = 0;
    const context = (subject: Subject): KindContext => ({
      rng, subject,
      newKey: () => `chaos-${runId}-${keySeq++}`,
      conversationId: () => `conv-${subject.tenantId}-${Math.floor(rng() * 4)}`,
    });

    // Faults strike one at a time, at seeded points of the run's progress.
    const plan = faultPlan(options.faults, options.faultsPerKind, faultRng);
    const strikeAt = plan.map((_, i) => Math.floor(((i + 0.5 + (faultRng() - 0.5) * 0.6) / plan.length) * options.requests * 0.85));
    let finished = 0;
    let sent = 0;
    const started = Date.now();
    const deadline = options.durationS > 0 ? started + options.durationS * 1000 : Infinity;
    const faults: FaultRecord[] = [];
    let probeSeq = 0;
    const probeOnce = async (): Promise<boolean> => {
      const r = await sender.send({ kind: 'probe', body: { model: CHAOS_MODEL, messages: [{ role: 'user', content: 'probe [mock:tokens=3]' }] }, headers: { 'idempotency-key': `probe-${runId}-${probeSeq++}` } }, probe, probeSeq);
      records.push(r);
      return r.status === 200 && r.complete;
    };
    // Lane l takes faults l, l + lanes, ...: within a lane one at a time, lanes at once.
    const lanes = Math.max(1, Math.min(options.faultLanes, plan.length));
    const faultLoop = Promise.all(Array.from({ length: lanes }, async (_, lane) => {
      for (let i = lane; i < plan.length; i += lanes) {
        while (finished < strikeAt[i]! && sent < options.requests && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        const fault = await injectFault(plan[i]!, { system, rng: faultRng, downMs: options.downMs, probe: probeOnce, log }, Date.now() - started, finished);
        faults.push(fault);
        log(`fault ${faults.length}/${plan.length}: ${fault.kind} (${fault.target}) at request ${fault.atRequest}, recovered in ${fault.recoveryMs} ms${fault.error ? `, ERROR ${fault.error}` : ''}`);
      }
    }));

    const progress = setInterval(() => log(`${finished}/${options.requests} requests finished, ${faults.length}/${plan.length} faults`), 10_000);
    const client = async (n: number): Promise<void> => {
      while (sent < options.requests && Date.now() < deadline) {
        const subject = subjects[Math.floor(rng() * subjects.length)]!;
        const planned = pickKind(REQUEST_KINDS, rng).plan(context(subject)).slice(0, options.requests - sent);
        sent += planned.length;
        const got = await Promise.all(planned.map((p, i) => sender.send(p, subject, n + i)));
        records.push(...got);
        finished += got.length;
      }
    };
    await Promise.all(Array.from({ length: options.concurrency }, (_, n) => client(n)));
    log(`all ${finished} requests answered; waiting for the faults still running`);
    await faultLoop;
    clearInterval(progress);
    const loadSeconds = (Date.now() - started) / 1000;
    log(`load done: ${finished} requests in ${loadSeconds.toFixed(1)} s; quiescing`);

    // Quiescence: every workflow settles on its own; what a fault left pending is swept.
    const quiesceStarted = Date.now();
    const tenantIds = [...new Set(subjects.map((s) => s.tenantId)), probe.tenantId];
    const pendingCount = async (): Promise<number> => Number((await system.db('billing_transaction').whereIn('tenant_id', tenantIds).andWhere({ status: 'pending' }).count<{ count: string }[]>('* as count'))[0]!.count);
    while ((await pendingCount()) > 0 && Date.now() - quiesceStarted < 120_000) await new Promise((r) => setTimeout(r, 1000));
    const leftPending = await pendingCount();
    if (leftPending > 0) {
      log(`${leftPending} reservations still pending: waiting ${SWEEP_PENDING_AFTER_SECONDS} s for the sweeper's threshold`);
      await new Promise((r) => setTimeout(r, SWEEP_PENDING_AFTER_SECONDS * 1000 + 1000));
    }
    await runJob(system, 'sweep');
    await runJob(system, 'consistency');
    const consistency = (await system.admin<ConsistencyFigures>('GET', '/admin/consistency/latest')).body;
    await runJob(system, 'quota');
    await runJob(system, 'apikey');
    for (let i = 0; i < 3; i++) await runJob(system, 'export');
    const quiesceSeconds = (Date.now() - quiesceStarted) / 1000;

    const invariants = await checkInvariants({ db: system.db, redis, receiver: system.receiver, records, subjects: [...subjects, probe], specs: [...specs] });
    const violations = [
      ...invariants.flatMap((i) => i.violations.map((v) => `${i.name}: ${v}`)),
      ...faults.filter((f) => f.error).map((f) => `fault ${f.kind} (${f.target}): ${f.error}`),
      ...system.fatal.map((e) => `crash loop: ${e.message.split('\n')[0]}`),
      ...(consistency.status === 'failed' ? ['consistency check failed'] : []),
    ];
    return { options, records, faults, consistency, invariants, violations, loadSeconds, quiesceSeconds };
  } finally {
    redis.disconnect();
    await system.stop();
  }
}
