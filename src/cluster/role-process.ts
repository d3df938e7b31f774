/**
 * One role of the app (`tsx src/main.ts api` or `worker`) in a process of its own, as a
 * container of docker-compose.yml runs it: `npm run cluster` starts two of each.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ServiceStartError } from '../embedded/child';

export interface RoleProcess {
  name: string;
  readonly pid: number | undefined;
  /** SIGTERM to its process group (tsx runs the app in a child node), SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * `logFile`: where the process's JSON log (stdout and stderr) is appended, as a container's log
 * would be kept; the launcher's terminal shows it only when the start fails.
 */
export async function startRoleProcess(
  rootDir: string, name: string, role: 'api' | 'worker', env: NodeJS.ProcessEnv, logFile: string, readyTimeoutMs = 120_000,
): Promise<RoleProcess> {
  fs.mkdirSync(path.dirname(logFile), { recursive: true });
  const log = fs.createWriteStream(logFile, { flags: 'a' });
  const child = spawn(path.join(rootDir, 'node_modules/.bin/tsx'), ['src/main.ts', role], {
    cwd: rootDir, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true,
  });
  let output = '';
  const keep = (b: Buffer): void => {
    log.write(b);
    if (!output.includes('Durable billing is ready')) output = (output + b.toString()).slice(-8_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.once('exit', () => log.end());
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
