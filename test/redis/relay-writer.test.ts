/**
 * RelayWriter after a failed write (issue 14, found by the fault-injection soak): once Redis
 * refused a write, the next push used to leave a settled promise in `flushing` for good and
 * flush() spun on it in microtasks, starving the worker's event loop after a Redis SIGKILL.
 * Now flush() rejects with the failure, and timers still run meanwhile.
 */
import { RelayWriter } from '../../src/redis/request-relay';
import { createRedis } from '../../src/redis/client';
import { freePort } from '../../src/embedded/child';
import { testRedis, uniqueId } from '../helpers/services';

describe('RelayWriter', () => {
  it('rejects flush() after a failed write instead of spinning, and the event loop keeps turning', async () => {
    const down = createRedis(`redis://127.0.0.1:${await freePort()}`);
    down.on('error', () => undefined);
    try {
      const writer = new RelayWriter(down, uniqueId('relay'), 60);
      writer.push({ type: 'chunk', data: { n: 1 } } as never);
      await expect(writer.flush()).rejects.toThrow();
      // The push after the failure: drain() returns without awaiting anything.
      writer.push({ type: 'chunk', data: { n: 2 } } as never);
      // Nothing left in flight once a macrotask passed (before the fix a settled promise stayed,
      // and the flush() below would spin forever, beyond the reach of any timeout).
      await new Promise((r) => setTimeout(r, 10));
      expect((writer as unknown as { flushing: unknown }).flushing).toBeUndefined();
      let timerRan = false;
      setTimeout(() => (timerRan = true), 0);
      await expect(writer.flush()).rejects.toThrow();
      await new Promise((r) => setTimeout(r, 20));
      expect(timerRan).toBe(true);
    } finally {
      down.disconnect();
    }
  });

  it('writes every entry in order when Redis answers', async () => {
    const redis = await testRedis();
    try {
      const key = uniqueId('relay');
      const writer = new RelayWriter(redis, key, 60);
      for (let n = 0; n < 5; n++) writer.push({ type: 'chunk', data: { n } } as never);
      await writer.flush();
      writer.push({ type: 'done' } as never);
      await writer.flush();
      expect(await redis.xlen(key)).toBe(6);
    } finally {
      redis.disconnect();
    }
  });
});
