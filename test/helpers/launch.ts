/**
 * A launcher of the project run as a user runs it (`tsx src/main.ts`, `tsx src/cluster/main.ts`),
 * with its output kept for the test to read, and a data directory the postgres user can reach.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { testConfig } from './services';

export interface Launched {
  child: ChildProcess;
  /** Everything it wrote so far, stdout and stderr. */
  output: () => string;
  exited: Promise<number | null>;
}

/** A fresh directory under the system's temp directory, readable by the postgres user (it holds a cluster). */
export function tempDataDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o755);
  return dir;
}

/**
 * Runs `script` with tsx in the project root, with only PATH, HOME and LOG_LEVEL=warn of the
 * environment plus `env` (which may override them). `detached`: a process group of its own,
 * as a terminal's foreground job.
 */
export function launch(script: string, env: Record<string, string>, opts: { detached?: boolean } = {}): Launched {
  const root = testConfig().rootDir;
  const child = spawn(path.join(root, 'node_modules/.bin/tsx'), [script], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: opts.detached ?? false,
  });
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

/** Resolves once the output matches `pattern`; fails when the process exits first or the time runs out. */
export async function waitForOutput(l: Launched, pattern: RegExp, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(l.output())) {
    if (Date.now() > deadline || l.child.exitCode !== null) throw new Error(`no ${pattern} in output:\n${l.output()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
