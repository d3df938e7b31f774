import Redis from 'ioredis';

/**
 * Creates an ioredis client. Commands fail fast while Redis is down (no offline
 * queue) so admission can fall back to PostgreSQL instead of waiting.
 */
export function createRedis(url: string, opts: { lazyConnect?: boolean } = {}): Redis {
  return new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    lazyConnect: opts.lazyConnect ?? false,
    retryStrategy: (attempt) => Math.min(attempt * 100, 2000),
  });
}

export type { Redis };
