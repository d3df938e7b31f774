/**
 * The isolation benchmark's flood, seen from the benchmark process: a long-lived child
 * (bench/isolation/flood-child.ts) that runs one autocannon flood at a time, started and stopped
 * per scenario, and answers the figures of any window of it: responses/s by HTTP status and
 * their latencies (autocannon's per-response times).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { loadConfig } from '../../src/config';
import { BenchSetupError } from '../gateway/gateway-process';
import type { LatencySummary } from '../gateway/statistics';

export interface FloodSpec { url: string; method: 'GET' | 'POST'; headers: Record<string, string>; body?: string; connections: number; timeoutS: number }

export interface FloodWindowFigures {
  seconds: number;
  responses: number;
  perSecond: number;
  /** Connection errors and timeouts. */
  errors: number;
  latency: LatencySummary;
  byStatus: Record<string, { count: number; perSecond: number; latency: LatencySummary }>;
}

export type FloodRequest =
  | ({ type: 'start' } & FloodSpec)
  | { type: 'stats'; fromUs: number; toUs: number }
  | { type: 'stop' };

export type FloodReply =
  | { type: 'ready' }
  | { type: 'started' }
  | { type: 'stats'; figures: FloodWindowFigures }
  | { type: 'stopped' };

export interface FloodProcess {
  child: ChildProcess;
  start(spec: FloodSpec): Promise<void>;
  /** Figures of the responses completed inside [fromUs, toUs] (monotonic clock, microseconds). */
  stats(fromUs: number, toUs: number): Promise<FloodWindowFigures>;
  /** Stops the running flood (autocannon drops the requests in flight). */
  halt(): Promise<void>;
  /** Ends the child. */
  close(): Promise<void>;
}

export async function startFloodProcess(): Promise<FloodProcess> {
  const rootDir = loadConfig().rootDir;
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'flood-child.ts')], { cwd: rootDir, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let waiter: { resolve: (r: FloodReply) => void; reject: (e: Error) => void } | undefined;
  child.on('message', (reply: FloodReply) => {
    const w = waiter;
    waiter = undefined;
    w?.resolve(reply);
  });
  child.once('exit', (code, signal) => waiter?.reject(new BenchSetupError(`the flood process exited (${code ?? signal})`)));
  const next = (): Promise<FloodReply> => new Promise((resolve, reject) => {
    waiter = { resolve, reject };
  });
  const ask = async <T extends FloodReply['type']>(req: FloodRequest, expect: T): Promise<Extract<FloodReply, { type: T }>> => {
    const reply = next();
    child.send(req);
    const r = await reply;
    if (r.type !== expect) throw new BenchSetupError(`flood: expected ${expect}, got ${r.type}`);
    return r as Extract<FloodReply, { type: T }>;
  };
  const first = await next();
  if (first.type !== 'ready') throw new BenchSetupError(`flood: unexpected first message ${first.type}`);
  let running = false;
  return {
    child,
    async start(spec) {
      await ask({ type: 'start', ...spec }, 'started');
      running = true;
    },
    async stats(fromUs, toUs) {
      return (await ask({ type: 'stats', fromUs, toUs }, 'stats')).figures;
    },
    async halt() {
      if (!running) return;
      running = false;
      await ask({ type: 'stop' }, 'stopped');
    },
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.disconnect(); // the child stops its flood and exits
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
