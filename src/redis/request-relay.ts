/**
 * The relay between the worker's UpstreamCallStep and the API's HTTP response:
 * one Redis Stream per request, so worker and API can be different processes.
 * The stream is also the record of what reached the client: a retried upstream
 * attempt reads it to learn whether output was already delivered (then it must not
 * call the upstream again) and what to bill for it.
 */
import { duplicateRedis, type Redis } from './client';
import { CacheKeys } from './cache-keys';

/** One relayed event. `chunk`/`response` carry upstream JSON; `error` and `done` end the stream. */
export type RelayEntry =
  | { type: 'chunk'; data: unknown }
  | { type: 'usage'; data: { prompt_tokens: number; completion_tokens: number; total_tokens: number } }
  | { type: 'response'; data: unknown }
  | { type: 'error'; data: { status: number; message: string; type: string; code: string } }
  | { type: 'done' };

export function isTerminal(entry: RelayEntry): boolean {
  return entry.type === 'done' || entry.type === 'error';
}

function encode(entry: RelayEntry): string[] {
  return 'data' in entry ? ['t', entry.type, 'd', JSON.stringify(entry.data)] : ['t', entry.type];
}

function decode(fields: string[]): RelayEntry {
  const map: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) map[fields[i]!] = fields[i + 1]!;
  const type = map.t;
  if (type === 'done') return { type };
  return { type, data: JSON.parse(map.d ?? 'null') } as RelayEntry;
}

/** Writes entries in order, coalescing the ones that arrive while a write is in flight into one pipeline. */
export class RelayWriter {
  private queue: RelayEntry[] = [];
  private flushing: Promise<void> | undefined;
  private failure: Error | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    private readonly ttlSeconds: number,
  ) {}

  /** Queues an entry; rejects later (on flush) if Redis refused an earlier write. */
  push(entry: RelayEntry): void {
    this.queue.push(entry);
    // Cleared in a `finally` callback, which always runs after this assignment. Clearing it inside
    // drain() went wrong when drain() returned without awaiting (a write had already failed): the
    // clear ran first, the assignment then kept a settled promise forever, and flush() spun on it
    // in microtasks, starving the worker's event loop (no Redis reconnect, no workflow task, no
    // metrics). Found by the fault-injection soak after a Redis SIGKILL (issue 14).
    if (!this.flushing) this.flushing = this.drain().finally(() => { this.flushing = undefined; });
  }

  /** Resolves when everything pushed so far is in Redis. */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.failure) throw this.failure;
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.failure) {
        const batch = this.queue;
        this.queue = [];
        const pipeline = this.redis.pipeline();
        for (const entry of batch) pipeline.xadd(this.key, '*', ...encode(entry));
        pipeline.expire(this.key, this.ttlSeconds);
        const results = await pipeline.exec();
        const failed = results?.find(([err]) => err);
        if (failed?.[0]) throw failed[0];
      }
    } catch (err) {
      this.failure = err instanceof Error ? err : new Error(String(err));
    }
  }
}

export interface RelayReadOptions {
  /** How long one XREAD blocks before checking `signal` again. */
  blockMs?: number;
  /** Give up when nothing arrives for this long. */
  idleTimeoutMs?: number;
  signal?: AbortSignal;
  /**
   * Called after each silent block while the stream does not exist yet; throwing
   * ends the read (e.g. the request finished long ago and its relay expired), unless
   * the stream was written meanwhile: then the read goes on (see read()).
   */
  onMissing?: (silentForMs: number) => Promise<void>;
}

/** Thrown when a relay stream stays silent past its idle timeout. */
export class RelayTimeoutError extends Error {
  override name = 'RelayTimeoutError';
}

/**
 * Thrown when Redis fails under a read in progress (down, or its Redis Cluster master failed
 * over). The read is not resumed: entries the old master had not yet replicated may be gone,
 * and the client must not get an output with a hole in it.
 */
export class RelayUnavailableError extends Error {
  override name = 'RelayUnavailableError';
}

/** A Redis call of a read in progress; its failure becomes a RelayUnavailableError. */
async function relayCall<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw new RelayUnavailableError(`relay read failed: ${(err as Error).message}`, { cause: err });
  }
}

export function createRequestRelay(redis: Redis, opts: { ttlSeconds: number }) {
  const key = (tenantId: string, requestId: string): string => CacheKeys.requestStream(tenantId, requestId);
  const cancelKey = (tenantId: string, requestId: string): string => `${key(tenantId, requestId)}:cancel`;
  // Blocking XREADs hold their connection: readers borrow one from this pool (on a cluster, a
  // client of its own whose XREAD goes to the master of the stream's slot).
  const idle: Redis[] = [];

  function borrow(): Redis {
    return idle.pop() ?? duplicateRedis(redis, { enableOfflineQueue: true, maxRetriesPerRequest: 1 });
  }

  return {
    writer(tenantId: string, requestId: string): RelayWriter {
      return new RelayWriter(redis, key(tenantId, requestId), opts.ttlSeconds);
    },

    /** Everything relayed so far (a retried attempt's view of what the client received). */
    async entries(tenantId: string, requestId: string): Promise<RelayEntry[]> {
      const rows = await redis.xrange(key(tenantId, requestId), '-', '+');
      return rows.map(([, fields]) => decode(fields));
    },

    /** Yields entries from the beginning until a terminal one (done/error). */
    async *read(tenantId: string, requestId: string, options: RelayReadOptions = {}): AsyncGenerator<RelayEntry> {
      const blockMs = options.blockMs ?? 1000;
      const idleTimeoutMs = options.idleTimeoutMs ?? 120_000;
      const conn = borrow();
      const exists = async (): Promise<boolean> => (await relayCall(() => conn.exists(key(tenantId, requestId)))) === 1;
      let healthy = true;
      try {
        let lastId = '0';
        let lastActivity = Date.now();
        for (;;) {
          if (options.signal?.aborted) return;
          const reply = await relayCall(() => conn.xread('COUNT', 500, 'BLOCK', blockMs, 'STREAMS', key(tenantId, requestId), lastId));
          const rows = reply?.[0]?.[1] ?? [];
          if (rows.length === 0) {
            const silentFor = Date.now() - lastActivity;
            if (silentFor > idleTimeoutMs) throw new RelayTimeoutError(`no output for ${idleTimeoutMs} ms`);
            if (lastId === '0' && options.onMissing && !(await exists())) {
              try {
                await options.onMissing(silentFor);
              } catch (err) {
                // The verdict "nothing will come" is only as fresh as the EXISTS before it: the writer may
                // have relayed everything and finished while onMissing decided (a describe() that took
                // seconds while a Temporal server process died and its shards moved, after which the run
                // reads as closed: test/cluster/temporal-server-kill.test.ts). A stream that exists now
                // is read, never refused as expired.
                if (!(await exists())) throw err;
              }
            }
            continue;
          }
          lastActivity = Date.now();
          for (const [id, fields] of rows) {
            lastId = id;
            const entry = decode(fields);
            yield entry;
            if (isTerminal(entry)) return;
          }
        }
      } catch (err) {
        healthy = false;
        throw err;
      } finally {
        if (healthy && idle.length < 256) idle.push(conn);
        else conn.disconnect();
      }
    },

    /** Asks the upstream call to stop (client went away). */
    async requestCancel(tenantId: string, requestId: string): Promise<void> {
      await redis.set(cancelKey(tenantId, requestId), '1', 'EX', opts.ttlSeconds);
    },

    async isCancelRequested(tenantId: string, requestId: string): Promise<boolean> {
      return (await redis.exists(cancelKey(tenantId, requestId))) === 1;
    },

    async close(): Promise<void> {
      for (const conn of idle.splice(0)) conn.disconnect();
      await Promise.resolve();
    },
  };
}

export type RequestRelay = ReturnType<typeof createRequestRelay>;
