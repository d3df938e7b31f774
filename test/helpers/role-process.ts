/**
 * One role of the app in a process of its own, started as docker-compose.yml starts it
 * (`tsx src/main.ts api` or `worker`) on the services global setup started. For tests
 * about what the real entry point registers and serves, or that kill it, which an
 * in-process startRoles() would blur: there the api and the worker share one registry.
 *
 * Each role gets free ports and, with no UPSTREAM_BASE_URL, its own mock upstream.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { freePort } from '../../src/embedded/child';
import { temporalAddress, testConfig } from './services';

export type Role = 'api' | 'worker';

export interface RoleProcess {
  role: Role;
  /** Its /metrics: the API port for the api, WORKER_METRICS_PORT for the worker. */
  metricsUrl: string;
  /** What it printed so far (stdout and stderr), for failure messages. */
  output(): string;
  /** SIGTERM (main.ts stops in order), SIGKILL if it has not exited after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL without warning, as a crash; resolves once the process is gone. */
  kill(): Promise<void>;
}

export interface RoleOptions {
  /** The task queue the role serves or starts workflows on; share it between an api and a worker. */
  taskQueue: string;
  /** Extra settings, as environment variables. */
  env?: Record<string, string>;
  /** How long to wait for "Durable billing is ready". @default 60_000 */
  readyTimeoutMs?: number;
}

/** Signals a detached child's whole process group: tsx runs the app in a child node process. */
function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal);
  } catch {
    // already gone
  }
}

export async function startRole(role: Role, opts: RoleOptions): Promise<RoleProcess> {
  const config = testConfig();
  const apiPort = await freePort();
  const workerMetricsPort = await freePort();
  const child = spawn(path.join(config.rootDir, 'node_modules/.bin/tsx'), ['src/main.ts', role], {
    cwd: config.rootDir,
    // Only what the role needs: nothing of the test runner's environment leaks into it.
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/root',
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn', // printed only when a start fails
      TEMPORAL_ADDRESS: temporalAddress(),
      REDIS_URL: config.REDIS_URL,
      DATABASE_URL: config.DATABASE_URL,
      TEMPORAL_TASK_QUEUE: opts.taskQueue,
      API_HOST: '127.0.0.1',
      API_PORT: String(apiPort),
      WORKER_METRICS_PORT: String(workerMetricsPort),
      MOCK_UPSTREAM_PORT: String(await freePort()),
      MAINTENANCE_SCHEDULES: 'false',
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group, so stop() reaches the node process under tsx
  });
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const stop = async (graceMs = 10_000): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    signalGroup(child, 'SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), graceMs)));
    if (await Promise.race([exited.then(() => false), late])) {
      signalGroup(child, 'SIGKILL');
      await exited;
    }
    clearTimeout(timer);
  };

  const kill = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    signalGroup(child, 'SIGKILL');
    await exited;
  };

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 60_000);
  while (!out.includes('Durable billing is ready')) {
    if (Date.now() > deadline || child.exitCode !== null) {
      await stop(0);
      throw new Error(`${role} did not start:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const port = role === 'api' ? apiPort : workerMetricsPort;
  return { role, metricsUrl: `http://127.0.0.1:${port}/metrics`, output: () => out, stop, kill };
}
