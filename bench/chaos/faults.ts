/**
 * Fault injection: SIGKILL of one component, its return, and the time until the system
 * serves again. A dependency (Redis, PostgreSQL, Temporal) is killed and brought back as its
 * topology does it (system.ts: the embedded stack's supervisor, or on the cluster a Temporal
 * server process started again and a Redis master's replica promoted); the soak's processes
 * (an API, a worker, the good upstream channel) are started again by the soak after `downMs`,
 * as a process manager would.
 * Recovery ends when the component is back and a probe request is billed (200) end to end.
 */
import type { FaultKind } from './options';
import type { SoakSystem } from './system';

export interface FaultRecord {
  kind: FaultKind;
  target: string;
  /** ms since the run started. */
  atMs: number;
  /** Requests finished when it struck. */
  atRequest: number;
  /** From the kill until the component serves again and a probe request was billed. */
  recoveryMs: number;
  /** Probe requests that did not succeed meanwhile (expected while a component is down). */
  failedProbes: number;
  error?: string;
}

export interface FaultDeps {
  system: SoakSystem;
  rng: () => number;
  downMs: number;
  /** One billed request through any API; true when it was a 200 with a full answer. */
  probe(): Promise<boolean>;
  log(line: string): void;
}

/** The fault order: each kind `perKind` times, shuffled by the seed. */
export function faultPlan(kinds: readonly FaultKind[], perKind: number, rng: () => number): FaultKind[] {
  const plan = kinds.flatMap((k) => Array.from({ length: perKind }, () => k));
  for (let i = plan.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [plan[i], plan[j]] = [plan[j]!, plan[i]!];
  }
  return plan;
}

export async function injectFault(kind: FaultKind, deps: FaultDeps, atMs: number, atRequest: number): Promise<FaultRecord> {
  const { system, rng } = deps;
  const started = Date.now();
  let target = kind as string;
  let failedProbes = 0;
  const record = (error?: string): FaultRecord => ({ kind, target, atMs, atRequest, recoveryMs: Date.now() - started, failedProbes, error });
  try {
    if (kind === 'redis' || kind === 'postgres' || kind === 'temporal') {
      const service = system.services[kind];
      if (!service) return record(`no ${kind} fault on the ${system.topology} topology`);
      target = await service.killAndRecover(rng, deps.downMs);
    } else {
      const group = kind === 'api' ? system.apis : kind === 'worker' ? system.workers : [system.upstreams[0]!];
      const victim = group[Math.floor(rng() * group.length)]!;
      target = victim.name;
      await victim.kill();
      await new Promise((r) => setTimeout(r, deps.downMs));
      await victim.start();
    }
    const deadline = Date.now() + 180_000;
    while (!(await deps.probe())) {
      failedProbes += 1;
      if (Date.now() > deadline) return record('no billed probe request within 180 s of the fault');
      await new Promise((r) => setTimeout(r, 250));
    }
    return record();
  } catch (err) {
    return record(err instanceof Error ? err.message.split('\n')[0] : String(err));
  }
}
