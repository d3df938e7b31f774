import type { Knex } from 'knex';

/**
 * Usage export, exactly once (docs/usage-export.md).
 *
 * usage_export_outbox: one row per committed usage entry of the ledger, written in the
 * transaction that commits it (a rollback leaves none, a crash after the commit loses none).
 * It holds what every destination is sent: ids, tokens, model, cost. No prompt, no key.
 *
 * usage_export_delivery: what each destination acknowledged (or was sent and not yet
 * acknowledged), one row per (destination, entry). An entry is due for a destination
 * exactly when it has no acknowledged row there; the rows are also what the daily
 * reconciliation compares with the ledger.
 *
 * usage_export_destination: per destination, its backoff after failures (a destination
 * that is down waits, holds its place, then catches up; the others go on).
 *
 * usage_export_reconciliation: the daily comparison's results, one row per (day, destination).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('usage_export_outbox', (t) => {
    t.bigInteger('ledger_id').primary().references('id').inTable('billing_transaction').onDelete('RESTRICT');
    // The stable id every destination dedupes on (CloudEvents id, Lago transaction_id, Stripe identifier, webhook header).
    t.text('event_id').notNullable().unique();
    t.text('tenant_id').notNullable();
    t.text('api_key_id').nullable();
    t.text('model').nullable();
    t.integer('prompt_tokens').notNullable().defaultTo(0);
    t.integer('completion_tokens').notNullable().defaultTo(0);
    t.bigInteger('cost_micros').notNullable();
    t.timestamp('committed_at', { useTz: true }).notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw('ALTER TABLE usage_export_outbox ADD CONSTRAINT usage_export_outbox_amounts CHECK (cost_micros >= 0 AND prompt_tokens >= 0 AND completion_tokens >= 0)');
  // The reconciliation reads one day of entries.
  await knex.raw('CREATE INDEX usage_export_outbox_committed_idx ON usage_export_outbox (committed_at)');

  await knex.schema.createTable('usage_export_delivery', (t) => {
    t.text('destination').notNullable();
    t.bigInteger('ledger_id').notNullable().references('ledger_id').inTable('usage_export_outbox').onDelete('CASCADE');
    t.timestamp('first_attempt_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('last_attempt_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.integer('attempts').notNullable().defaultTo(0);
    // Set when the destination acknowledged it (2xx, or its own "already have it").
    t.timestamp('delivered_at', { useTz: true }).nullable();
    // 'delivered' | 'duplicate' (the destination already had it) | 'held' (past the dedupe window, not resent: to reconcile).
    t.text('outcome').nullable();
    t.text('last_error').nullable();
    t.primary(['destination', 'ledger_id']);
  });
  await knex.raw(`ALTER TABLE usage_export_delivery ADD CONSTRAINT usage_export_delivery_outcome CHECK (outcome IS NULL OR outcome IN ('delivered', 'duplicate', 'held'))`);
  await knex.raw('CREATE INDEX usage_export_delivery_open_idx ON usage_export_delivery (destination, first_attempt_at) WHERE delivered_at IS NULL');

  await knex.schema.createTable('usage_export_destination', (t) => {
    t.text('destination').primary();
    t.integer('consecutive_failures').notNullable().defaultTo(0);
    t.timestamp('next_attempt_at', { useTz: true }).nullable();
    t.timestamp('last_success_at', { useTz: true }).nullable();
    t.text('last_error').nullable();
    // A run holds the destination until then: two runs (scheduled and manual) never send one batch twice at once.
    t.timestamp('lease_until', { useTz: true }).nullable();
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });

  await knex.schema.createTable('usage_export_reconciliation', (t) => {
    t.date('day').notNullable();
    t.text('destination').notNullable();
    t.integer('ledger_entries').notNullable();
    t.integer('acknowledged').notNullable();
    // Committed in the ledger that day, not acknowledged by the destination.
    t.integer('missing').notNullable();
    // Acknowledged, but not a committed usage entry of that day in the ledger (or its cost differs).
    t.integer('unexpected').notNullable();
    // Held for reconciliation (Stripe: older than its dedupe window, not resent blindly).
    t.integer('held').notNullable();
    // A few ledger ids of each kind of difference, for the operator.
    t.jsonb('sample').notNullable().defaultTo('{}');
    t.timestamp('checked_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['day', 'destination']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('usage_export_reconciliation');
  await knex.schema.dropTable('usage_export_destination');
  await knex.schema.dropTable('usage_export_delivery');
  await knex.schema.dropTable('usage_export_outbox');
}
