/**
 * DistributedLock (M7, M10.1: lock cases) on the real Redis: mutual exclusion under
 * concurrency, expiry of a dead holder's lock, the watchdog keeping a live holder's lock,
 * release by the holder only, a bounded wait that names the holder, a lost lock reported
 * to its holder, and fencing tokens that only grow.
 */
import { Registry } from 'prom-client';
import { createLogger } from '../../src/log';
import { createLockMetrics } from '../../src/metrics';
import { createDistributedLock, LockTimeoutError, type HeldLock } from '../../src/locks/distributed-lock';
import type { Redis } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';
import { QuotaScriptName } from '../../src/redis/lua-source';
import { createScriptRunner } from '../../src/redis/script-runner';
import { metricValue } from '../helpers/activity-deps';
import { testRedis, uniqueId } from '../helpers/services';

let redis: Redis;
beforeAll(async () => {
  redis = await testRedis();
});
afterAll(() => redis.disconnect());

function lockOn(opts: { ttlMs?: number; waitMs?: number; maxPollMs?: number; subscriber?: Redis } = {}) {
  const registry = new Registry();
  const run = createScriptRunner(redis, registry);
  const lock = createDistributedLock({ redis, run, metrics: createLockMetrics(registry), log: createLogger('silent', 'test'), ...(opts.subscriber ? { subscriber: opts.subscriber } : {}) }, opts);
  return { lock, registry, run };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('DistributedLock (M7)', () => {
  it('M7.1 lets one holder at a time work on a conversation: 20 concurrent appends never overlap and all get through', async () => {
    const { lock, registry } = lockOn({ waitMs: 10_000 });
    const conversation = uniqueId('conv');
    let inside = 0;
    let mostInside = 0;
    const order: number[] = [];

    await Promise.all(Array.from({ length: 20 }, (_, i) => lock.withLock(conversation, async () => {
      inside++;
      mostInside = Math.max(mostInside, inside);
      await sleep(5);
      order.push(i);
      inside--;
    })));

    expect(mostInside).toBe(1);
    expect(order.sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(await metricValue(registry, 'billing_lock_wait_seconds_count', { outcome: 'acquired' })).toBe(20);
    expect(await metricValue(registry, 'billing_lock_held')).toBe(0);
    expect(await redis.exists(CacheKeys.conversationLock(conversation))).toBe(0);
  });

  it('M7.2 a dead holder\'s lock expires by itself after its TTL, and the next holder gets a larger fence', async () => {
    const conversation = uniqueId('conv');
    const { lock, run } = lockOn({ ttlMs: 300, waitMs: 2_000 });
    // A holder in a process that then dies: it took the lock (the same script) and nothing renews it.
    const [taken, deadFence] = (await run(QuotaScriptName.lockAcquire, [CacheKeys.conversationLock(conversation), CacheKeys.conversationLockFence(conversation)],
      ['owner-of-a-dead-process', '300', 'crashed worker', String(Date.now())])) as [number, number];
    expect(taken).toBe(1);

    const started = Date.now();
    const next = await lock.acquire(conversation);

    expect(Date.now() - started).toBeGreaterThanOrEqual(200);
    expect(next.fence).toBe(deadFence + 1);
    await next.release();
  });

  it('M7.2 a live holder\'s watchdog keeps the lock past its TTL; release frees it at once', async () => {
    const { lock } = lockOn({ ttlMs: 300, waitMs: 200 });
    const conversation = uniqueId('conv');
    const held = await lock.acquire(conversation);

    await sleep(1_000); // more than three TTLs
    await expect(lock.acquire(conversation)).rejects.toBeInstanceOf(LockTimeoutError);
    expect(held.lost.aborted).toBe(false);

    expect(await held.release()).toBe(true);
    const next = await lock.acquire(conversation, { waitMs: 0 });
    expect(next.fence).toBe(held.fence + 1);
    await next.release();
  });

  it('M7.2 only the holder can release: a holder whose lock expired and was taken cannot free the new holder\'s', async () => {
    const { lock } = lockOn({ ttlMs: 200, waitMs: 2_000 });
    const conversation = uniqueId('conv');
    const key = CacheKeys.conversationLock(conversation);
    const stale = await lock.acquire(conversation);
    // The stale holder pauses (no renewal): simulate by letting its entry expire under another owner's name.
    await redis.hset(key, 'owner', 'paused-holder');
    await redis.pexpire(key, 50);
    const fresh = await lock.acquire(conversation);

    expect(await stale.release()).toBe(false);
    const holder = await lock.inspect(conversation);
    expect(holder?.fence).toBe(fresh.fence);
    expect(fresh.fence).toBeGreaterThan(stale.fence);
    expect(await fresh.release()).toBe(true);
  });

  it('M7.3 a bounded wait gives up with a clear error naming the holder, and the wait is measured', async () => {
    const { lock, registry } = lockOn({ ttlMs: 5_000 });
    const conversation = uniqueId('conv');
    const held = await lock.acquire(conversation, { info: 'tenant acme, request req_1' });

    const started = Date.now();
    const err = await lock.acquire(conversation, { waitMs: 250 }).catch((e: unknown) => e);

    const waited = Date.now() - started;
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect((err as LockTimeoutError).message).toMatch(new RegExp(`conversation ${conversation} is locked by another request \\(fence ${held.fence}\\); gave up after \\d+ ms`));
    expect((err as LockTimeoutError).holder).toMatchObject({ fence: held.fence, info: 'tenant acme, request req_1' });
    expect(waited).toBeGreaterThanOrEqual(250);
    expect(waited).toBeLessThan(1_500);
    expect(await metricValue(registry, 'billing_lock_wait_seconds_count', { outcome: 'timeout' })).toBe(1);
    await held.release();
  });

  it('M7.3 an operator\'s release of a stuck lock frees it, and its holder learns it lost the lock', async () => {
    const { lock, registry } = lockOn({ ttlMs: 300 });
    const conversation = uniqueId('conv');
    const held: HeldLock = await lock.acquire(conversation);

    expect(await lock.forceRelease(conversation)).toBe(true);
    await new Promise<void>((resolve) => held.lost.addEventListener('abort', () => resolve()));

    expect(held.lost.aborted).toBe(true);
    expect(await metricValue(registry, 'billing_lock_lost_total')).toBe(1);
    const next = await lock.acquire(conversation, { waitMs: 0 });
    expect(next.fence).toBeGreaterThan(held.fence);
    expect(await held.release()).toBe(false); // the old holder cannot free the new one
    expect(await next.release()).toBe(true);
    expect(await lock.forceRelease(conversation)).toBe(false);
  });

  it('fencing tokens only grow: across releases, expiries and operator releases of one conversation', async () => {
    const { lock } = lockOn({ ttlMs: 100 });
    const conversation = uniqueId('conv');
    const fences: number[] = [];
    for (let i = 0; i < 3; i++) {
      const held = await lock.acquire(conversation);
      fences.push(held.fence);
      await held.release();
    }
    const forced = await lock.acquire(conversation);
    fences.push(forced.fence);
    await lock.forceRelease(conversation);
    const last = await lock.acquire(conversation, { waitMs: 0 });
    fences.push(last.fence);
    await last.release();
    await forced.release();

    expect(fences).toEqual([...fences].sort((a, b) => a - b));
    expect(new Set(fences).size).toBe(fences.length);
  });

  it.each(['polling', 'woken on release'] as const)('100 contenders on one conversation (%s): all get the lock, never two at once, and the fences strictly increase in holding order', async (mode) => {
    const subscriber = mode === 'polling' ? undefined : redis.duplicate();
    const { lock, registry } = lockOn({ waitMs: 60_000, subscriber });
    const conversation = uniqueId('conv');
    let inside = 0;
    let mostInside = 0;
    const fencesInOrder: number[] = [];
    const holders: number[] = [];

    await Promise.all(Array.from({ length: 100 }, (_, i) => lock.withLock(conversation, async (held) => {
      inside++;
      mostInside = Math.max(mostInside, inside);
      fencesInOrder.push(held.fence);
      await sleep(1);
      holders.push(i);
      inside--;
    }, { info: `req-${i}` })));

    expect(mostInside).toBe(1);
    expect([...holders].sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(fencesInOrder).toHaveLength(100);
    for (let i = 1; i < fencesInOrder.length; i++) expect(fencesInOrder[i]!).toBeGreaterThan(fencesInOrder[i - 1]!);
    expect(await metricValue(registry, 'billing_lock_wait_seconds_count', { outcome: 'acquired' })).toBe(100);
    expect(await metricValue(registry, 'billing_lock_wait_seconds_count', { outcome: 'timeout' })).toBeUndefined(); // no wait gave up
    expect(await redis.exists(CacheKeys.conversationLock(conversation))).toBe(0);
    subscriber?.disconnect();
  }, 90_000);

  it('a release wakes a waiter subscribed to it at once, long before its next poll (8 times of 10 at least)', async () => {
    const subscriber = redis.duplicate();
    // Polls grow to seconds here, so only the wake-up can explain an acquisition soon after a release.
    const { lock } = lockOn({ waitMs: 10_000, maxPollMs: 5_000, subscriber });
    const conversation = uniqueId('conv');
    let held = await lock.acquire(conversation);
    const afterRelease: number[] = [];
    for (let i = 0; i < 10; i++) {
      // After 600 ms of waiting the waiter sleeps 320-1280 ms between polls: a poll lands within 150 ms
      // of the release about one time in five, eight times out of ten practically never (p < 1e-4).
      // (Two slow ones are allowed: a loaded machine's event-loop stalls, which made a stricter bound flaky.)
      const waiter = lock.acquire(conversation, { info: `waiter-${i}` });
      await sleep(600);
      const released = Date.now();
      await held.release();
      const next = await waiter;
      afterRelease.push(Date.now() - released);
      expect(next.fence).toBeGreaterThan(held.fence);
      held = next;
    }
    await held.release();
    expect(afterRelease.filter((ms) => ms < 150).length).toBeGreaterThanOrEqual(8);
    subscriber.disconnect();
  });
});
