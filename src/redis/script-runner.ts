/**
 * Calls a lua/*.lua script by SHA (M1.2). A NOSCRIPT answer (after SCRIPT FLUSH, a
 * Redis restart or a failover to a replica that never saw SCRIPT LOAD) runs the source
 * once with EVAL, which also caches it on that node, so callers never see it. The SHA is computed locally, so
 * calls work before any SCRIPT LOAD as well. Every call is timed, every reload counted.
 *
 * Errors keep their meaning for the caller: a `QuotaScriptRejectedError` means Redis
 * answered (bad arguments, corrupt counter) and falling back to PostgreSQL would not
 * help; any other error (connection refused, timeout) means Redis is unreachable (M2.3).
 */
import type { Redis } from './client';
import type { Registry } from 'prom-client';
import { createRedisScriptMetrics } from '../metrics';
import { luaScript, type QuotaScriptName } from './lua-source';

/** Thrown when Redis answers a script call with an error: malformed arguments, a corrupt counter, a wrong key type. */
export class QuotaScriptRejectedError extends Error {
  override name = 'QuotaScriptRejectedError';

  constructor(
    readonly script: QuotaScriptName,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${script}: ${message}`, options);
  }
}

/** Thrown when a caller passes an amount that is not a safe integer (money is integer micros) or is out of range. */
export class InvalidMicrosError extends Error {
  override name = 'InvalidMicrosError';
}

export function micros(label: string, value: number, opts: { min?: number } = {}): string {
  if (!Number.isSafeInteger(value)) throw new InvalidMicrosError(`${label} must be a safe integer, got ${value}`);
  if (opts.min !== undefined && value < opts.min) throw new InvalidMicrosError(`${label} must be >= ${opts.min}, got ${value}`);
  // String(n) of a safe integer is the canonical decimal form the scripts require.
  return String(value);
}

function isNoScript(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith('NOSCRIPT');
}

/** ioredis' ReplyError is typed `any`; its name identifies an error answered by Redis itself. */
function isReplyError(err: unknown): err is Error {
  return err instanceof Error && err.name === 'ReplyError';
}

export type ScriptRunner = (name: QuotaScriptName, keys: readonly string[], args: readonly string[]) => Promise<unknown>;

export function createScriptRunner(redis: Redis, registry: Registry): ScriptRunner {
  const metrics = createRedisScriptMetrics(registry);
  return async function run(name: QuotaScriptName, keys: readonly string[], args: readonly string[]): Promise<unknown> {
    const { sha, source } = luaScript(name);
    const stopTimer = metrics.duration.startTimer({ script: name });
    try {
      try {
        return await redis.evalsha(sha, keys.length, ...keys, ...args);
      } catch (err) {
        if (!isNoScript(err)) throw err;
        metrics.reloads.inc({ script: name });
        // EVAL, not SCRIPT LOAD + EVALSHA: it goes where the keys are (on a cluster, SCRIPT LOAD
        // would reach a random node, and a promoted replica never saw the script) and caches it there.
        return await redis.eval(source, keys.length, ...keys, ...args);
      }
    } catch (err) {
      if (isReplyError(err)) throw new QuotaScriptRejectedError(name, err.message, { cause: err });
      throw err;
    } finally {
      stopTimer();
    }
  };
}
