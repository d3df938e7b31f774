/**
 * The gateway under test: `src/main.ts` (role all: API + worker + built-in mock upstream at zero
 * latency) started as a child process on free ports, with its own task queue and admin token,
 * and the admin HTTP calls the benchmark makes to it. A child, not in-process, so the load
 * generator never shares the gateway's event loop and each process's CPU can be told apart.
 * Its warn/error log lines are counted, because a fast run that logged errors is not a good run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { loadConfig } from '../../src/config';
import { freePort } from '../../src/embedded/child';

/** Thrown when the benchmark cannot set itself up (the gateway does not start, an admin call fails). */
export class BenchSetupError extends Error {
  override name = 'BenchSetupError';
}

export interface GatewayProcess {
  child: ChildProcess;
  apiUrl: string;
  upstreamUrl: string;
  /** warn/error log lines the gateway wrote (pino levels 40, 50, 60). */
  problems: { warn: number; error: number; last: string[] };
  stop(): Promise<void>;
}

export interface GatewayEndpoints { temporalAddress: string; redisUrl: string; databaseUrl: string }

/** Starts `src/main.ts` (role all) on the given services: it starts the mock upstream, migrates, runs the worker and the API. */
export async function startGateway(endpoints: GatewayEndpoints, adminToken: string, opts: { cpuProfile: boolean; env?: Readonly<Record<string, string>> }): Promise<GatewayProcess> {
  const rootDir = loadConfig().rootDir;
  const [apiPort, mockPort, workerMetricsPort] = [await freePort(), await freePort(), await freePort()];
  // The child reads its configuration from the environment like `npm start` does; ours passes through.
  const env = {
    ...process.env,
    ...opts.env,
    TEMPORAL_ADDRESS: endpoints.temporalAddress,
    REDIS_URL: endpoints.redisUrl,
    DATABASE_URL: endpoints.databaseUrl,
    UPSTREAM_BASE_URL: '', // always the built-in mock, never a real provider
    TEMPORAL_TASK_QUEUE: `bench-gateway-${process.pid}`,
    ADMIN_TOKEN: adminToken,
    LOG_LEVEL: 'warn',
    API_PORT: String(apiPort),
    MOCK_UPSTREAM_PORT: String(mockPort),
    WORKER_METRICS_PORT: String(workerMetricsPort),
  };
  // --cpu-prof: V8 writes the gateway's CPU profile to bench/results/ when it exits (open it in Chrome DevTools).
  const profile = opts.cpuProfile ? ['--cpu-prof', '--cpu-prof-dir', path.join(rootDir, 'bench', 'results')] : [];
  const child = spawn(process.execPath, [...profile, '--import', 'tsx', path.join(rootDir, 'src', 'main.ts')], { cwd: rootDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const problems = { warn: 0, error: 0, last: [] as string[] };
  const tail: string[] = [];
  let ready = false;
  const onLine = (line: string): void => {
    if (line.trim() === '') return;
    tail.push(line);
    if (tail.length > 30) tail.shift();
    if (line.includes('Durable billing is ready')) ready = true;
    const level = /"level":(\d+)/.exec(line)?.[1];
    if (level === '40') problems.warn += 1;
    if (level === '50' || level === '60') problems.error += 1;
    if (level !== undefined && Number(level) >= 40) {
      problems.last.push(line.slice(0, 1500));
      if (problems.last.length > 5) problems.last.shift();
    }
  };
  for (const stream of [child.stdout, child.stderr]) {
    let carry = '';
    stream?.on('data', (buf: Buffer) => {
      const lines = (carry + buf.toString('utf8')).split('\n');
      carry = lines.pop() ?? '';
      lines.forEach(onLine);
    });
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM'); // main.ts stops the worker, the API and the mock, then exits
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
  };
  const apiUrl = `http://127.0.0.1:${apiPort}`;
  const deadline = Date.now() + 120_000;
  while (!ready || !(await fetch(`${apiUrl}/readyz`).then((r) => r.ok, () => false))) {
    if (child.exitCode !== null || child.signalCode !== null) throw new BenchSetupError(`the gateway exited while starting:\n${tail.join('\n')}`);
    if (Date.now() > deadline) {
      await stop();
      throw new BenchSetupError(`the gateway was not ready after 120 s:\n${tail.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { child, apiUrl, upstreamUrl: `http://127.0.0.1:${mockPort}`, problems, stop };
}

/** One admin API call (JSON in, JSON out); any non-2xx is a setup failure. */
export async function adminCall<T>(apiUrl: string, token: string, method: string, route: string, body?: unknown): Promise<T> {
  const res = await fetch(`${apiUrl}${route}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new BenchSetupError(`${method} ${route}: HTTP ${res.status} ${text}`);
  return JSON.parse(text) as T;
}
