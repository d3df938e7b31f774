import type { Knex } from 'knex';

/**
 * Transaction-aware dispatch (M5): the outbox. A follow-up task registered inside a
 * database transaction is written here in that same transaction, so it exists exactly
 * when the transaction committed (a rollback leaves no row, M5.2). After the commit the
 * dispatcher starts its Temporal workflow (workflow id = task_id, so a second start is a
 * no-op, M5.4) and sets dispatched_at; rows a crash left undispatched are sent by the
 * outbox drain (src/dispatch/dispatcher.ts). The payload holds ids and figures, never
 * secrets or prompts.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('dispatch_outbox', (t) => {
    // Deterministic: derived from what caused the task, never random.
    t.text('task_id').primary();
    // The workflow type to start.
    t.text('kind').notNullable();
    t.text('task_queue').notNullable();
    // The TenantId search attribute of the started workflow (null: a task of no tenant).
    t.text('tenant_id').nullable();
    t.jsonb('payload').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('dispatched_at', { useTz: true }).nullable();
    t.integer('attempts').notNullable().defaultTo(0);
    t.text('last_error').nullable();
  });
  // The drain and the depth gauges read only undispatched rows, oldest first.
  await knex.raw('CREATE INDEX dispatch_outbox_undispatched_idx ON dispatch_outbox (created_at) WHERE dispatched_at IS NULL');
  await knex.raw('CREATE INDEX dispatch_outbox_dispatched_at_idx ON dispatch_outbox (dispatched_at) WHERE dispatched_at IS NOT NULL');
  await knex.raw('ALTER TABLE dispatch_outbox ADD CONSTRAINT dispatch_outbox_attempts_check CHECK (attempts >= 0)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('dispatch_outbox');
}
