import type { Knex } from 'knex';

/**
 * Budget alerts: one row per (subject, threshold) saying whether the threshold is
 * crossed (budget_alert_state), and one row per alert raised (budget_alert, the record
 * of its delivery). A crossing flips `crossed` with `UPDATE ... WHERE NOT crossed`, so
 * each crossing raises one alert however many settlements see it; a top-up that brings
 * usage back below re-arms it (crossed = false), and the next crossing increments
 * `sequence`, which is part of the alert id (the alert's workflow id).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('budget_alert_state', (t) => {
    t.text('subject_kind').notNullable();
    // The tenant id, or the API key id.
    t.text('subject_id').notNullable();
    t.text('tenant_id').notNullable().references('tenant_id').inTable('tenant_quota').onDelete('CASCADE');
    t.integer('threshold_percent').notNullable();
    t.boolean('crossed').notNullable();
    t.integer('sequence').notNullable();
    t.timestamp('crossed_at', { useTz: true }).nullable();
    t.timestamp('rearmed_at', { useTz: true }).nullable();
    t.primary(['subject_kind', 'subject_id', 'threshold_percent']);
  });
  await knex.raw(`ALTER TABLE budget_alert_state
    ADD CONSTRAINT budget_alert_state_kind_check CHECK (subject_kind IN ('tenant', 'api_key')),
    ADD CONSTRAINT budget_alert_state_sequence_check CHECK (sequence >= 1)`);

  await knex.schema.createTable('budget_alert', (t) => {
    // = the dispatch task id = the delivery workflow's id; receivers dedupe on it.
    t.text('alert_id').primary();
    t.text('tenant_id').notNullable().references('tenant_id').inTable('tenant_quota').onDelete('CASCADE');
    t.text('api_key_id').nullable();
    t.text('subject_kind').notNullable();
    t.text('subject_id').notNullable();
    t.integer('threshold_percent').notNullable();
    t.integer('sequence').notNullable();
    t.bigInteger('used_micros').notNullable();
    t.bigInteger('limit_micros').notNullable();
    t.timestamp('crossed_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.text('status').notNullable().defaultTo('pending');
    t.integer('attempts').notNullable().defaultTo(0);
    t.integer('last_http_status').nullable();
    t.text('last_error').nullable();
    t.timestamp('delivered_at', { useTz: true }).nullable();
    t.timestamp('failed_at', { useTz: true }).nullable();
    t.index(['tenant_id', 'crossed_at'], 'budget_alert_tenant_idx');
  });
  await knex.raw(`ALTER TABLE budget_alert
    ADD CONSTRAINT budget_alert_kind_check CHECK (subject_kind IN ('tenant', 'api_key')),
    ADD CONSTRAINT budget_alert_status_check CHECK (status IN ('pending', 'delivered', 'failed')),
    ADD CONSTRAINT budget_alert_money_check CHECK (used_micros >= 0 AND limit_micros >= 0)`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('budget_alert');
  await knex.schema.dropTable('budget_alert_state');
}
