import type { Knex } from 'knex';

/**
 * Quota and API-key sync (M4.1, M4.2): the synced tables remember which version of the
 * Redis counter they hold (`synced_version`, the counter hash's `version` field), so a sync
 * that read earlier can never write its older value over a newer one; `sync_run` keeps
 * every run of a maintenance job (the lag metric and the run history read it).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('tenant_quota', (t) => {
    t.bigInteger('synced_version').nullable();
  });
  await knex.schema.alterTable('api_key_quota', (t) => {
    t.bigInteger('synced_version').nullable();
  });
  await knex.schema.createTable('sync_run', (t) => {
    t.bigIncrements('id').primary();
    t.text('job').notNullable();
    t.text('outcome').notNullable();
    t.timestamp('started_at', { useTz: true }).notNullable();
    t.timestamp('finished_at', { useTz: true }).notNullable();
    t.integer('subjects').notNullable().defaultTo(0);
    t.integer('written').notNullable().defaultTo(0);
    t.text('error').nullable();
    t.index(['job', 'started_at'], 'sync_run_job_started_idx');
  });
  await knex.raw(`ALTER TABLE sync_run ADD CONSTRAINT sync_run_outcome_check CHECK (outcome IN ('ok', 'error'))`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('sync_run');
  await knex.schema.alterTable('api_key_quota', (t) => {
    t.dropColumn('synced_version');
  });
  await knex.schema.alterTable('tenant_quota', (t) => {
    t.dropColumn('synced_version');
  });
}
