/**
 * One role of the app (`tsx src/main.ts api` or `worker`) in a process of its own, as a
 * container of docker-compose.yml runs it: `npm run cluster` starts two of each.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { ServiceStartError } from '../embedded/child';

export interface RoleProcess {
  name: string;
  readonly pid: number | undefined;
  /** SIGTERM to its process group (tsx runs the app in a child node), SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export async function startRoleProcess(
  rootDir: string, name: string, role: 'api' | 'worker', env: NodeJS.ProcessEnv, readyTimeoutMs = 120_000,
): Promise<RoleProcess> {
  const child = spawn(path.join(rootDir, 'node_modules/.bin/tsx'), ['src/main.ts', role], {
    cwd: rootDir, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true,
  });
  let output = '';
  const keep = (b: Buffer): void => {
    output = (output + b.toString()).slice(-8_000);
  };
  child.stdout.on('data', keep);
  // Its log lines (stderr and stdout) stay in the launcher's terminal only when they matter: at a failed start.
  child.stderr.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const signal = (sig: NodeJS.Signals): void => {
    try {
      process.kill(-child.pid!, sig);
    } catch {
      // already gone
    }
  };
  const stop = async (graceMs = 30_000): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    signal('SIGTERM');
    const timer = setTimeout(() => signal('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };
  const deadline = Date.now() + readyTimeoutMs;
  while (!output.includes('Durable billing is ready')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop(0);
      throw new ServiceStartError(`${name} did not start:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { name, get pid() { return child.pid; }, stop };
}
