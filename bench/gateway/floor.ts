/**
 * The Temporal floor of the gateway benchmark, seen from the benchmark process: it starts
 * bench/gateway/floor-worker.ts as a child (worker + client of the no-op floor workflow, on its
 * own task queue, against the gateway's Temporal server) and runs phases in it over IPC. A child
 * for the same reason as the gateway: its CPU can be told apart, and the load generator's event
 * loop is not the one measured.
 *
 * Floor figures: workflows/s (requests whose regular activity ran), latency from the
 * update-with-start call until the regular activity ran (the moment the gateway's response ends),
 * and the admission update's own latency. Settlements trail behind, as in the gateway; `drain`
 * waits for them after a phase, outside its CPU window.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { loadConfig } from '../../src/config';
import { BenchSetupError } from './gateway-process';
import type { LatencySummary } from './statistics';

export interface FloorFigures {
  connections: number;
  started: number;
  /** Requests whose regular activity ran (the floor's "2xx"). */
  completed: number;
  errors: number;
  lastError?: string;
  /** Until the last completion. */
  durationS: number;
  perSecond: number;
  /** update-with-start call -> the regular activity ran. */
  latency: LatencySummary;
  /** update-with-start call -> the admission update returned. */
  admission: LatencySummary;
}

export type FloorRequest =
  | { type: 'run'; connections: number; durationS?: number; amount?: number }
  | { type: 'drain' }
  | { type: 'stop' };

export type FloorReply =
  | { type: 'ready' }
  | { type: 'result'; figures: FloorFigures }
  | { type: 'drained'; unsettled: number }
  | { type: 'failed'; message: string };

export interface FloorProcess {
  child: ChildProcess;
  taskQueue: string;
  /** One closed-loop phase: `connections` loops for `durationS` seconds (or `amount` workflows in all). */
  run(bound: { connections: number; durationS: number } | { connections: number; amount: number }): Promise<FloorFigures>;
  /** Waits (up to 60 s) for settlements still running; answers how many never ran. */
  drain(): Promise<number>;
  stop(): Promise<void>;
}

/** Starts the floor child against `temporalAddress`; resolves once its worker runs. */
export async function startFloor(temporalAddress: string, namespace: string, opts: { cpuProfile: boolean }): Promise<FloorProcess> {
  const rootDir = loadConfig().rootDir;
  const taskQueue = `bench-floor-${process.pid}`;
  const env = {
    ...process.env,
    FLOOR_TEMPORAL_ADDRESS: temporalAddress,
    FLOOR_TEMPORAL_NAMESPACE: namespace,
    FLOOR_TASK_QUEUE: taskQueue,
    FLOOR_TENANT_ID: `bench-floor-${process.pid}`,
  };
  const profile = opts.cpuProfile ? ['--cpu-prof', '--cpu-prof-dir', path.join(rootDir, 'bench', 'results')] : [];
  const child = spawn(process.execPath, [...profile, '--import', 'tsx', path.join(__dirname, 'floor-worker.ts')], { cwd: rootDir, env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  const tail: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    stream?.on('data', (buf: Buffer) => {
      tail.push(...buf.toString('utf8').split('\n').filter((l) => l.trim() !== ''));
      tail.splice(0, Math.max(0, tail.length - 30));
    });
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let pending: { resolve: (reply: FloorReply) => void; reject: (err: Error) => void } | undefined;
  child.on('message', (reply: FloorReply) => pending?.resolve(reply));
  child.once('exit', (code, signal) => pending?.reject(new BenchSetupError(`the floor process exited (${code ?? signal}):\n${tail.join('\n')}`)));
  const next = (): Promise<FloorReply> => new Promise((resolve, reject) => {
    pending = {
      resolve: (reply) => {
        pending = undefined;
        if (reply.type === 'failed') reject(new BenchSetupError(`floor: ${reply.message}`));
        else resolve(reply);
      },
      reject,
    };
  });
  const ask = async (req: FloorRequest): Promise<FloorReply> => {
    const reply = next();
    child.send(req);
    return reply;
  };

  const readyTimer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  try {
    const first = await next();
    if (first.type !== 'ready') throw new BenchSetupError(`floor: unexpected first message ${first.type}`);
  } finally {
    clearTimeout(readyTimer);
  }

  return {
    child,
    taskQueue,
    async run(bound) {
      const reply = await ask({ type: 'run', ...bound });
      if (reply.type !== 'result') throw new BenchSetupError(`floor: unexpected reply ${reply.type}`);
      return reply.figures;
    },
    async drain() {
      const reply = await ask({ type: 'drain' });
      if (reply.type !== 'drained') throw new BenchSetupError(`floor: unexpected reply ${reply.type}`);
      return reply.unsettled;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      pending = undefined;
      if (child.connected) child.send({ type: 'stop' } satisfies FloorRequest);
      else child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
