/**
 * The soak's own child processes, the ones it kills and starts again itself: the API and
 * worker roles (`tsx src/main.ts api|worker`, as docker-compose runs them) and the two mock
 * upstreams (`tsx src/upstream/mock/main.ts`). A restart reuses the port, as a process
 * manager would, so the channels and the load balancer keep their addresses.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { canConnect } from '../../src/embedded/child';

export interface ManagedProcess {
  readonly name: string;
  readonly port: number;
  pid(): number | undefined;
  /** Starts it and resolves once it serves (its ready line, or its port for the mock). */
  start(): Promise<void>;
  /** SIGKILL of its whole process group (tsx runs the app in a child node process). */
  kill(): Promise<void>;
  /** SIGTERM, SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  running(): boolean;
  output(): string;
}

export interface ManagedProcessSpec {
  name: string;
  rootDir: string;
  script: string;
  args: string[];
  env: Record<string, string>;
  port: number;
  /** A line that says it is ready; without one, readiness is its port accepting connections. */
  readyLine?: string;
  readyTimeoutMs?: number;
  /** Everything it writes is appended here too (every restart), for a look after the run. */
  logFile?: string;
}

export function managedProcess(spec: ManagedProcessSpec): ManagedProcess {
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let out = '';
  const alive = (): boolean => child !== undefined && child.exitCode === null && child.signalCode === null;
  const signal = (sig: NodeJS.Signals): void => {
    try {
      if (child?.pid) process.kill(-child.pid, sig);
    } catch {
      // already gone
    }
  };
  return {
    name: spec.name,
    port: spec.port,
    pid: () => child?.pid,
    running: alive,
    output: () => out,
    async start() {
      out = '';
      const c = spawn(path.join(spec.rootDir, 'node_modules/.bin/tsx'), [spec.script, ...spec.args], {
        cwd: spec.rootDir,
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', ...spec.env },
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      child = c;
      const keep = (b: Buffer): void => {
        out += b.toString();
        if (spec.logFile) fs.appendFileSync(spec.logFile, b);
        if (out.length > 200_000) out = out.slice(-100_000);
      };
      c.stdout?.on('data', keep);
      c.stderr?.on('data', keep);
      exited = new Promise((resolve) => c.once('exit', () => resolve()));
      const deadline = Date.now() + (spec.readyTimeoutMs ?? 120_000);
      for (;;) {
        if (spec.readyLine ? out.includes(spec.readyLine) : await canConnect(spec.port)) return;
        if (!alive()) throw new Error(`${spec.name} exited while starting:\n${out.slice(-3000)}`);
        if (Date.now() > deadline) {
          signal('SIGKILL');
          throw new Error(`${spec.name} was not ready after ${spec.readyTimeoutMs ?? 120_000} ms:\n${out.slice(-3000)}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async kill() {
      if (!alive()) return;
      signal('SIGKILL');
      await exited;
    },
    async stop(graceMs = 15_000) {
      if (!alive()) return;
      signal('SIGTERM');
      const timer = setTimeout(() => signal('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}
