/**
 * Child processes of the embedded stack: spawn, wait for readiness, stop.
 * Every child is tracked so a SIGINT/SIGTERM of the launcher stops them all.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import net from 'node:net';

export interface ServiceProcess {
  readonly name: string;
  readonly child: ChildProcess;
  /** Sends `signal`, waits up to `timeoutMs`, then SIGKILLs. Resolves when the process is gone. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<void>;
  /** The last lines the process wrote, for error messages. */
  recentOutput(): string;
}

/** Thrown when an embedded service cannot start (port in use, binary missing, exits early). */
export class ServiceStartError extends Error {
  override name = 'ServiceStartError';
}

export function spawnService(name: string, command: string, args: string[], opts: SpawnOptions = {}): ServiceProcess {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  const lines: string[] = [];
  const keep = (buf: Buffer): void => {
    for (const line of buf.toString('utf8').split('\n')) {
      if (line.trim() === '') continue;
      lines.push(line);
      if (lines.length > 40) lines.shift();
    }
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.on('error', (err) => lines.push(`spawn error: ${err.message}`));
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  return {
    name,
    child,
    recentOutput: () => lines.join('\n'),
    async stop(signal = 'SIGTERM', timeoutMs = 10_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Resolves when something accepts TCP connections on host:port. */
export function canConnect(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    socket.setTimeout(500);
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('timeout', () => { socket.destroy(); resolve(false); });
    socket.once('error', () => resolve(false));
  });
}

/** Fails with a message naming the port (and what wanted it) when the port is taken. */
export async function assertPortFree(port: number, what: string): Promise<void> {
  if (await canConnect(port)) {
    throw new ServiceStartError(`port ${port} (${what}) is already in use: stop what holds it or choose another port in the environment`);
  }
}

/** A free TCP port on loopback, chosen by the OS. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Polls `ready` until it returns true; fails early if the process exits. */
export async function waitUntilReady(
  service: ServiceProcess,
  ready: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const { exitCode, signalCode } = service.child;
    if (exitCode !== null || signalCode !== null) {
      throw new ServiceStartError(`${service.name} exited (${exitCode ?? signalCode}) while starting:\n${service.recentOutput()}`);
    }
    if (await ready().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 150));
  }
  await service.stop('SIGKILL');
  throw new ServiceStartError(`${service.name} was not ready after ${timeoutMs} ms:\n${service.recentOutput()}`);
}
