import knex, { type Knex } from 'knex';

/** Creates the knex instance for the ledger database. BIGINT stays a string in pg; repositories convert with BigInt/Number checks. */
export function createDb(databaseUrl: string, pool: { min?: number; max?: number } = {}): Knex {
  return knex({
    client: 'pg',
    connection: databaseUrl,
    pool: { min: pool.min ?? 0, max: pool.max ?? 10 },
  });
}

export type { Knex };
