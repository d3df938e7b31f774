/**
 * The request relay's read on the real Redis: the check "nothing will come" that a reader makes
 * while the stream does not exist yet (onMissing) never wins over a stream written meanwhile
 * (issue 13 item 4: a 409 "output has expired" for a request whose relay was written while the
 * check was on its way).
 */
import type { Redis } from '../../src/redis/client';
import { createRequestRelay, type RelayEntry } from '../../src/redis/request-relay';
import { testRedis, uniqueId } from '../helpers/services';

class GoneError extends Error {}

describe('request relay read', () => {
  let redis: Redis;
  let relay: ReturnType<typeof createRequestRelay>;
  beforeAll(async () => {
    redis = await testRedis();
    relay = createRequestRelay(redis, { ttlSeconds: 60 });
  });
  afterAll(async () => {
    await relay.close();
    redis.disconnect();
  });

  async function readAll(tenantId: string, requestId: string, onMissing: () => Promise<void>): Promise<RelayEntry[]> {
    const got: RelayEntry[] = [];
    for await (const entry of relay.read(tenantId, requestId, { blockMs: 50, idleTimeoutMs: 5_000, onMissing })) got.push(entry);
    return got;
  }

  it('reads the stream that was written while onMissing concluded nothing would come', async () => {
    const [tenantId, requestId] = [uniqueId('t'), uniqueId('req')];
    let checks = 0;
    const entries = await readAll(tenantId, requestId, async () => {
      checks++;
      // The writer relays everything and finishes while the check is on its way; the check then says "finished".
      const writer = relay.writer(tenantId, requestId);
      writer.push({ type: 'response', data: { id: 'resp-1' } });
      writer.push({ type: 'done' });
      await writer.flush();
      throw new GoneError('finished, its relay expired');
    });
    expect(entries).toEqual([{ type: 'response', data: { id: 'resp-1' } }, { type: 'done' }]);
    expect(checks).toBe(1);
  });

  it('ends with onMissing\'s error when the stream still does not exist after it', async () => {
    const [tenantId, requestId] = [uniqueId('t'), uniqueId('req')];
    await expect(readAll(tenantId, requestId, () => Promise.reject(new GoneError('expired')))).rejects.toBeInstanceOf(GoneError);
  });

  it('keeps waiting while onMissing says the writer may still write', async () => {
    const [tenantId, requestId] = [uniqueId('t'), uniqueId('req')];
    let checks = 0;
    const entries = await readAll(tenantId, requestId, async () => {
      if (++checks < 3) return;
      const writer = relay.writer(tenantId, requestId);
      writer.push({ type: 'done' });
      await writer.flush();
    });
    expect(entries).toEqual([{ type: 'done' }]);
    expect(checks).toBe(3);
  });
});
