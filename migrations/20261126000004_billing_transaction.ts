import type { Knex } from 'knex';

/**
 * M1.1 billing_transaction: the ledger. One row per request id (unique): the
 * "exactly once" invariant is enforced by the database, not only by code.
 * Usage rows go pending -> committed | voided (M3.4); top-ups are committed at once.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('billing_transaction', (t) => {
    t.bigIncrements('id').primary();
    t.text('request_id').notNullable().unique();
    t.text('tenant_id').notNullable().references('tenant_id').inTable('tenant_quota').onDelete('RESTRICT');
    t.text('api_key_id').nullable().references('id').inTable('api_key_quota').onDelete('RESTRICT');
    t.text('kind').notNullable().defaultTo('usage');
    t.text('status').notNullable();
    t.text('workflow_id').nullable();
    t.text('model').nullable();
    // What admission reserved (worst case) and where: 'redis' or the 'postgres' fallback.
    t.bigInteger('reserved_micros').notNullable().defaultTo(0);
    t.text('admission_path').nullable();
    // Final amount: the settled cost of a usage row, the credited amount of a top-up.
    t.bigInteger('amount_micros').nullable();
    t.integer('prompt_tokens').nullable();
    t.integer('completion_tokens').nullable();
    t.text('token_source').nullable();
    t.text('failure_reason').nullable();
    t.timestamps(true, true);
    t.timestamp('committed_at', { useTz: true }).nullable();
    t.timestamp('voided_at', { useTz: true }).nullable();
    t.index(['tenant_id', 'id'], 'billing_transaction_tenant_listing');
    t.index(['api_key_id', 'id'], 'billing_transaction_key_listing');
  });
  await knex.raw(`ALTER TABLE billing_transaction
    ADD CONSTRAINT billing_transaction_kind CHECK (kind IN ('usage', 'topup')),
    ADD CONSTRAINT billing_transaction_status CHECK (status IN ('pending', 'committed', 'voided')),
    ADD CONSTRAINT billing_transaction_token_source CHECK (token_source IS NULL OR token_source IN ('upstream', 'tiktoken', 'estimate')),
    ADD CONSTRAINT billing_transaction_admission_path CHECK (admission_path IS NULL OR admission_path IN ('redis', 'postgres')),
    ADD CONSTRAINT billing_transaction_amounts CHECK (reserved_micros >= 0 AND (amount_micros IS NULL OR amount_micros >= 0)),
    ADD CONSTRAINT billing_transaction_committed_amount CHECK (status <> 'committed' OR amount_micros IS NOT NULL)`);
  // Sweeps look for reservations left pending (nothing may stay pending forever).
  await knex.raw(`CREATE INDEX billing_transaction_pending ON billing_transaction (created_at) WHERE status = 'pending'`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('billing_transaction');
}
