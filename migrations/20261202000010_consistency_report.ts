import type { Knex } from 'knex';

/**
 * M4.3 consistency_report: one row per consistency check run (Redis counters vs the ledger
 * vs the synced tables). Written 'running' when a run starts and completed when it ends, so a
 * run that died shows as such. `drifted` holds the subjects found drifting, in the shape
 * GET /admin/consistency/latest serves (snake_case, integer micros).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('consistency_report', (t) => {
    t.bigIncrements('id').primary();
    t.text('status').notNullable();
    t.timestamp('started_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('finished_at', { useTz: true }).nullable();
    // Tenant ids of a run limited to some tenants (ops, tests); NULL = every tenant.
    t.specificType('scope_tenant_ids', 'text[]').nullable();
    t.integer('tenants_checked').notNullable().defaultTo(0);
    t.integer('keys_checked').notNullable().defaultTo(0);
    // Sums of |Redis - ledger| over the confirmed drifted counters.
    t.bigInteger('tenant_drift_micros').notNullable().defaultTo(0);
    t.bigInteger('apikey_drift_micros').notNullable().defaultTo(0);
    // Sums of |synced table - ledger| over the subjects quiet since their last sync.
    t.bigInteger('tenant_synced_drift_micros').notNullable().defaultTo(0);
    t.bigInteger('apikey_synced_drift_micros').notNullable().defaultTo(0);
    t.jsonb('drifted').notNullable().defaultTo('[]');
    t.integer('drifted_count').notNullable().defaultTo(0);
    // Subjects whose Redis counter drifted (confirmed), per kind.
    t.integer('tenants_drifted').notNullable().defaultTo(0);
    t.integer('keys_drifted').notNullable().defaultTo(0);
    t.boolean('healed').notNullable().defaultTo(false);
    t.integer('heals').notNullable().defaultTo(0);
    t.integer('rebuilt').notNullable().defaultTo(0);
    t.integer('candidates').notNullable().defaultTo(0);
    t.integer('busy').notNullable().defaultTo(0);
    t.jsonb('busy_subjects').notNullable().defaultTo('[]');
    t.integer('synced_lagging').notNullable().defaultTo(0);
    t.integer('never_synced').notNullable().defaultTo(0);
    t.bigInteger('threshold_micros').notNullable().defaultTo(0);
    t.boolean('alerted').notNullable().defaultTo(false);
    t.integer('duration_ms').nullable();
    t.text('error').nullable();
  });
  await knex.raw(`ALTER TABLE consistency_report
    ADD CONSTRAINT consistency_report_status CHECK (status IN ('running', 'ok', 'drift', 'failed')),
    ADD CONSTRAINT consistency_report_amounts CHECK (tenant_drift_micros >= 0 AND apikey_drift_micros >= 0
      AND tenant_synced_drift_micros >= 0 AND apikey_synced_drift_micros >= 0 AND threshold_micros >= 0)`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('consistency_report');
}
