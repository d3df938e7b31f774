/**
 * DistributedLock (M7): the lock that serialises writes to one conversation, on Redis.
 *
 * - Owner token: every acquisition gets a random token; only the holder of that token can
 *   extend or release the lock (compare-and-delete in Lua, lua/lock_release.lua).
 * - TTL and watchdog: a lock expires `ttlMs` after it was taken or last extended, so a
 *   holder that dies frees it by itself; a live holder's watchdog extends it every third of
 *   the TTL until the holder releases it. When an extension finds the lock gone or taken
 *   (it expired during a pause, or an operator released it), the holder's `lost` signal
 *   fires and the watchdog stops.
 * - Fencing token: each acquisition gets the next value of a counter that never expires, so
 *   a store that keeps the largest token it has accepted can refuse the late write of a
 *   holder that lost the lock (the lock alone cannot stop a paused holder waking up).
 * - Bounded wait: `acquire` polls with a growing, jittered delay and gives up after
 *   `waitMs` with a LockTimeoutError naming the current holder.
 * - Wake-up on release: with a `subscriber` connection, lock_release.lua publishes on the
 *   conversation's channel and the first waiter of this process (FIFO) tries at once
 *   instead of at its next poll: one waiter per process per release, no thundering herd;
 *   the others keep polling, so a missed message only costs a poll interval.
 * - Every wait is measured (billing_lock_wait_seconds); ops can inspect and release a stuck
 *   lock (`GET|DELETE /admin/locks/:conversation_id`, `npm run locks`) (M7.3).
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from '../redis/client';
import type { Logger } from '../log';
import type { LockMetrics } from '../metrics';
import { CacheKeys } from '../redis/cache-keys';
import { QuotaScriptName } from '../redis/lua-source';
import type { ScriptRunner } from '../redis/script-runner';

/** What operators see of a held lock. */
export interface LockHolder {
  conversationId: string;
  fence: number;
  /** What the holder left for operators (ids only). */
  info: string;
  acquiredAt: Date;
  /** Remaining life; the watchdog keeps moving it while the holder works. */
  expiresInMs: number;
}

/** Thrown when a lock stays held by another owner for the whole bounded wait. */
export class LockTimeoutError extends Error {
  override name = 'LockTimeoutError';

  constructor(
    readonly conversationId: string,
    readonly waitedMs: number,
    readonly holder: LockHolder | null,
  ) {
    super(`conversation ${conversationId} is locked by another request (fence ${holder?.fence ?? '?'}); gave up after ${waitedMs} ms`);
  }
}

/** A lock this process holds. */
export interface HeldLock {
  conversationId: string;
  /** The fencing token: larger than every earlier holder's. Store it with each write. */
  fence: number;
  /** Aborted when the lock was lost while held (expired and taken, or released by an operator). */
  lost: AbortSignal;
  /** Stops the watchdog and releases the lock if still ours; false when it was not ours any more. */
  release(): Promise<boolean>;
}

export interface DistributedLockOptions {
  /** @default 30_000 */
  ttlMs?: number;
  /** Default bounded wait of acquire(). @default 10_000 */
  waitMs?: number;
  /** Longest sleep between a waiter's polls (they grow from 5 ms). @default 100 */
  maxPollMs?: number;
  /** @default Date.now */
  now?: () => number;
}

export interface DistributedLockDeps {
  redis: Pick<Redis, 'hgetall' | 'pttl' | 'del'>;
  /** A connection of its own for pub/sub (e.g. `redis.duplicate()`): waiters wake on release. Without it they only poll. */
  subscriber?: Pick<Redis, 'subscribe' | 'unsubscribe' | 'on'>;
  run: ScriptRunner;
  metrics: LockMetrics;
  log: Pick<Logger, 'warn'>;
}

const MIN_POLL_MS = 5;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The waiters of this process per conversation channel, first come first woken. */
function createReleaseWakeups(subscriber: Pick<Redis, 'subscribe' | 'unsubscribe' | 'on'>, log: Pick<Logger, 'warn'>) {
  const waiters = new Map<string, Array<() => void>>();
  subscriber.on('message', (channel: string) => waiters.get(channel)?.shift()?.());
  return {
    /** Sleeps up to `ms`, or less when a release on `channel` wakes this waiter. */
    sleep(channel: string, ms: number): Promise<void> {
      return new Promise((resolve) => {
        let queue = waiters.get(channel);
        if (!queue) {
          queue = [];
          waiters.set(channel, queue);
          subscriber.subscribe(channel).catch((err: unknown) => log.warn({ err: (err as Error).message }, 'lock release channel: subscribe failed, waiters poll'));
        }
        const wake = (): void => {
          clearTimeout(timer);
          const q = waiters.get(channel);
          const at = q?.indexOf(wake) ?? -1;
          if (q && at >= 0) q.splice(at, 1);
          if (q && q.length === 0) {
            waiters.delete(channel);
            subscriber.unsubscribe(channel).catch(() => undefined);
          }
          resolve();
        };
        const timer = setTimeout(wake, ms);
        queue.push(wake);
      });
    },
  };
}

export function createDistributedLock(deps: DistributedLockDeps, opts: DistributedLockOptions = {}) {
  const ttlMs = opts.ttlMs ?? 30_000;
  const defaultWaitMs = opts.waitMs ?? 10_000;
  const maxPollMs = opts.maxPollMs ?? 100;
  const now = opts.now ?? Date.now;
  const wakeups = deps.subscriber ? createReleaseWakeups(deps.subscriber, deps.log) : undefined;

  async function inspect(conversationId: string): Promise<LockHolder | null> {
    const key = CacheKeys.conversationLock(conversationId);
    const [fields, pttl] = await Promise.all([deps.redis.hgetall(key), deps.redis.pttl(key)]);
    if (!fields['owner']) return null;
    return {
      conversationId,
      fence: Number(fields['fence']),
      info: fields['info'] ?? '',
      acquiredAt: new Date(Number(fields['acquired_at'])),
      expiresInMs: pttl,
    };
  }

  /** Keeps the lock alive every third of its TTL; fires `lost` when an extension finds it gone or taken. */
  function watchdog(conversationId: string, owner: string, lost: AbortController): () => void {
    const key = CacheKeys.conversationLock(conversationId);
    let lastExtended = now();
    const timer = setInterval(() => {
      deps.run(QuotaScriptName.lockExtend, [key], [owner, String(ttlMs)]).then(
        (extended) => {
          if (extended === 1) {
            lastExtended = now();
            return;
          }
          markLost('the lock was gone or held by another owner at renewal');
        },
        (err: unknown) => {
          // Redis unreachable: keep trying while the lock may still live; past its TTL it is gone.
          if (now() - lastExtended >= ttlMs) markLost(`renewal failed for a whole TTL: ${(err as Error).message}`);
        },
      );
    }, Math.max(1, Math.floor(ttlMs / 3)));
    timer.unref();
    function markLost(reason: string): void {
      if (lost.signal.aborted) return;
      clearInterval(timer);
      deps.metrics.lost.inc();
      deps.log.warn({ conversationId, reason }, 'conversation lock lost while held');
      lost.abort(new Error(reason));
    }
    return () => clearInterval(timer);
  }

  async function acquire(conversationId: string, o: { waitMs?: number; info?: string } = {}): Promise<HeldLock> {
    const key = CacheKeys.conversationLock(conversationId);
    const fenceKey = CacheKeys.conversationLockFence(conversationId);
    const owner = randomUUID();
    const waitMs = o.waitMs ?? defaultWaitMs;
    const stopTimer = deps.metrics.wait.startTimer();
    const started = now();
    for (let attempt = 0; ; attempt++) {
      const [taken, value] = (await deps.run(QuotaScriptName.lockAcquire, [key, fenceKey], [owner, String(ttlMs), o.info ?? '', String(now())])) as [number, number];
      if (taken === 1) {
        stopTimer({ outcome: 'acquired' });
        deps.metrics.held.inc();
        const lost = new AbortController();
        const stopWatchdog = watchdog(conversationId, owner, lost);
        let released = false;
        return {
          conversationId,
          fence: value,
          lost: lost.signal,
          async release(): Promise<boolean> {
            if (released) return false;
            released = true;
            stopWatchdog();
            deps.metrics.held.dec();
            return (await deps.run(QuotaScriptName.lockRelease, [key], [owner])) === 1;
          },
        };
      }
      const waited = now() - started;
      if (waited >= waitMs) {
        stopTimer({ outcome: 'timeout' });
        throw new LockTimeoutError(conversationId, waited, await inspect(conversationId).catch(() => null));
      }
      // Growing and jittered, so waiters do not poll in step; never past the deadline or the holder's expiry.
      const delay = Math.min(maxPollMs, MIN_POLL_MS * 2 ** Math.min(attempt, 12)) * (0.5 + Math.random() / 2);
      const pause = Math.max(1, Math.min(delay, waitMs - waited, value > 0 ? value : delay));
      await (wakeups ? wakeups.sleep(CacheKeys.conversationLockReleased(conversationId), pause) : sleep(pause));
    }
  }

  return {
    acquire,

    /** Runs `fn` holding the lock, and releases it afterwards whatever `fn` does. */
    async withLock<T>(conversationId: string, fn: (lock: HeldLock) => Promise<T>, o: { waitMs?: number; info?: string } = {}): Promise<T> {
      const lock = await acquire(conversationId, o);
      try {
        return await fn(lock);
      } finally {
        await lock.release();
      }
    },

    /** The holder of a conversation's lock, or null when nobody holds it (ops). */
    inspect,

    /** Releases a stuck lock whoever holds it (ops); the holder's watchdog then reports it lost. */
    async forceRelease(conversationId: string): Promise<boolean> {
      return (await deps.redis.del(CacheKeys.conversationLock(conversationId))) === 1;
    },
  };
}

export type DistributedLock = ReturnType<typeof createDistributedLock>;
