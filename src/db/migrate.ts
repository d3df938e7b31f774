import type { Knex } from 'knex';
import { migrationSource } from '../../migrations';

const options: Knex.MigratorConfig = { migrationSource, tableName: 'knex_migrations' };

/** Applies every pending migration; returns the names applied now. */
export async function migrateLatest(db: Knex): Promise<string[]> {
  const [, applied] = (await db.migrate.latest(options)) as [number, string[]];
  return applied;
}

/** Rolls back every applied migration (tests and ops only). */
export async function rollbackAll(db: Knex): Promise<string[]> {
  const [, reverted] = (await db.migrate.rollback(options, true)) as [number, string[]];
  return reverted;
}

export async function appliedMigrations(db: Knex): Promise<string[]> {
  const [completed] = (await db.migrate.list(options)) as [Array<{ name: string } | string>, unknown];
  return completed.map((m) => (typeof m === 'string' ? m : m.name));
}
