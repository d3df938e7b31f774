/**
 * Supervision of the embedded stack's children (M12): a service that exits without being
 * asked to is started again, after a backoff that doubles with each crash of the window,
 * and every exit and restart is logged with the child's last output lines. A crash loop
 * (more than `maxRestarts` unexpected exits within `windowMs`) is not retried forever: the
 * supervisor gives up, logs why, and reports a CrashLoopError to its owner, which stops the
 * stack and exits non-zero. A stack that spins restarting a broken binary looks alive to
 * whoever watches the process and serves nothing; one that stops says what is wrong.
 *
 * The restarted child keeps its port, data directory and arguments, so clients (ioredis,
 * knex's pool, the Temporal connections) reconnect to the same address on their own.
 */
import type { Logger } from '../log';
import type { ServiceProcess } from './child';

/** How a supervised child is restarted, and when restarting stops. */
export interface SupervisionPolicy {
  /** More unexpected exits than this within `windowMs` is a crash loop. @default 5 */
  maxRestarts: number;
  /** @default 60_000 */
  windowMs: number;
  /** Wait before the first restart; doubled for each further crash in the window. @default 250 */
  initialBackoffMs: number;
  /** @default 5_000 */
  maxBackoffMs: number;
}

/** How long after a child's exit the supervisor decides it was unexpected. */
const EXIT_GRACE_MS = 100;

export const DEFAULT_SUPERVISION_POLICY: Readonly<SupervisionPolicy> = Object.freeze({
  maxRestarts: 5,
  windowMs: 60_000,
  initialBackoffMs: 250,
  maxBackoffMs: 5_000,
});

/** Thrown (reported) when a supervised service keeps crashing: it is no longer restarted. */
export class CrashLoopError extends Error {
  override name = 'CrashLoopError';
  constructor(readonly service: string, readonly exits: readonly string[], readonly lastOutput: string) {
    super(`embedded ${service} is in a crash loop (${exits.length} unexpected exits: ${exits.join(', ')}); it is not restarted again and the stack stops. Its last output:\n${lastOutput}`);
  }
}

export interface SupervisedService {
  readonly name: string;
  /** The child running now (a restart replaces it). */
  current(): ServiceProcess;
  /** Unexpected exits so far (each was followed by a restart attempt, or by giving up). */
  crashes(): number;
  /** Resolves once the service serves again after the latest crash (at once when it never crashed). */
  whenRunning(): Promise<void>;
  /** From now on an exit is expected (the stack is shutting down; a terminal's Ctrl-C reaches the children too). */
  expectExit(): void;
  /** Stops the child on purpose: no restart follows. */
  stop(): Promise<void>;
}

export interface SuperviseOptions {
  policy?: Partial<SupervisionPolicy>;
  log: Pick<Logger, 'info' | 'warn' | 'error' | 'fatal'>;
  /** Called once when the service is given up on; the owner stops the stack. */
  onCrashLoop(err: CrashLoopError): void;
  /** Logged with each restart: what a restart of this service costs (an in-memory server comes back empty). */
  restartNote?: string;
}

function exitLabel(child: ServiceProcess['child']): string {
  return child.signalCode ? `signal ${child.signalCode}` : `code ${child.exitCode ?? '?'}`;
}

/** A started service as src/embedded's start functions return it. */
export interface StartedService {
  process: ServiceProcess;
  stop(): Promise<void>;
}

/**
 * Supervises `first`, a service the caller started, and restarts it with `start` (which
 * waits until it is ready and throws ServiceStartError when it cannot start). The first
 * start is the caller's: a stack that cannot start at all has nothing to keep running,
 * so that failure is thrown to it, not retried.
 */
export function superviseService(
  name: string,
  first: StartedService,
  start: () => Promise<StartedService>,
  opts: SuperviseOptions,
): SupervisedService {
  const policy: SupervisionPolicy = { ...DEFAULT_SUPERVISION_POLICY, ...opts.policy };
  let running = first;
  let stopping = false;
  let gaveUp = false;
  let crashCount = 0;
  const recentCrashes: number[] = [];
  const exits: string[] = [];
  let recovered: Promise<void> = Promise.resolve();

  const crashLoop = (lastOutput: string): void => {
    gaveUp = true;
    const err = new CrashLoopError(name, exits.slice(-(policy.maxRestarts + 1)), lastOutput);
    opts.log.fatal({ service: name, exits: err.exits }, `embedded ${name} is in a crash loop: stopping the stack`);
    opts.onCrashLoop(err);
  };

  /** Restarts until one start succeeds (each failed start is one more crash), or gives up. */
  const restart = async (lastOutput: string): Promise<void> => {
    for (;;) {
      const now = Date.now();
      recentCrashes.push(now);
      while (recentCrashes.length > 0 && recentCrashes[0]! < now - policy.windowMs) recentCrashes.shift();
      if (recentCrashes.length > policy.maxRestarts) return crashLoop(lastOutput);
      const backoffMs = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * 2 ** (recentCrashes.length - 1));
      opts.log.warn({ service: name, backoffMs, crashesInWindow: recentCrashes.length, note: opts.restartNote }, `restarting embedded ${name}`);
      await new Promise((r) => setTimeout(r, backoffMs));
      if (stopping) return;
      try {
        running = await start();
        watch(running.process);
        opts.log.info({ service: name, pid: running.process.child.pid }, `embedded ${name} restarted`);
        return;
      } catch (err) {
        crashCount += 1;
        const message = err instanceof Error ? err.message : String(err);
        exits.push(`failed restart`);
        lastOutput = message;
        opts.log.error({ service: name, reason: message.split('\n')[0] }, `embedded ${name} failed to restart`);
      }
    }
  };

  function watch(proc: ServiceProcess): void {
    proc.child.once('exit', () => void decide());
    // A terminal's Ctrl-C reaches the children and the launcher at once; the child's exit may be
    // seen before the launcher's SIGINT handler ran expectExit(). A short grace tells them apart.
    const decide = async (): Promise<void> => {
      await new Promise((r) => setTimeout(r, EXIT_GRACE_MS));
      if (stopping || gaveUp) return;
      crashCount += 1;
      exits.push(exitLabel(proc.child));
      opts.log.error({ service: name, exit: exitLabel(proc.child), output: proc.recentOutput().split('\n').slice(-5) }, `embedded ${name} exited unexpectedly`);
      recovered = restart(proc.recentOutput());
    };
  }
  watch(running.process);

  return {
    name,
    current: () => running.process,
    crashes: () => crashCount,
    whenRunning: () => recovered,
    expectExit: () => { stopping = true; },
    async stop() {
      stopping = true;
      await recovered.catch(() => undefined);
      await running.stop();
    },
  };
}
