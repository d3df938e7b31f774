import type { Knex } from 'knex';

/**
 * The endpoint a usage row billed (issue 11): `chat`, `embeddings` or `responses`, written
 * with the pending row at admission and shown by GET /admin/requests/:id. Nullable and
 * not back-filled: rows written before the column existed are chat completions (the
 * application reads NULL on a usage row as `chat`), and a top-up row has no operation.
 * No default, no UPDATE: adding the column is a catalogue change, not a rewrite of the ledger.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('billing_transaction', (t) => {
    t.text('operation').nullable();
  });
  await knex.raw(`ALTER TABLE billing_transaction
    ADD CONSTRAINT billing_transaction_operation_known CHECK (operation IS NULL OR operation IN ('chat', 'embeddings', 'responses'))`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('billing_transaction', (t) => {
    t.dropColumn('operation');
  });
}
