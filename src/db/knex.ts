import knex, { type Knex } from 'knex';
import type { Logger } from '../log';

/**
 * Creates the knex instance for the ledger database. BIGINT stays a string in pg; repositories convert with BigInt/Number checks.
 * With `log`, knex's own warnings (a pool that cannot connect while PostgreSQL restarts) go to the
 * service's JSON log at debug, first line only: knex would print whole stacks to the console.
 */
export function createDb(databaseUrl: string, pool: { min?: number; max?: number } = {}, log?: Logger): Knex {
  const firstLine = (message: unknown): string => String(message).split('\n', 1)[0] ?? '';
  return knex({
    client: 'pg',
    connection: databaseUrl,
    pool: { min: pool.min ?? 0, max: pool.max ?? 10 },
    ...(log && {
      log: {
        warn: (m: unknown) => log.debug({ knex: firstLine(m) }, 'database client warning'),
        error: (m: unknown) => log.warn({ knex: firstLine(m) }, 'database client error'),
        deprecate: (m: unknown) => log.debug({ knex: firstLine(m) }, 'database client deprecation'),
        debug: () => undefined,
      },
    }),
  });
}

export type { Knex };
