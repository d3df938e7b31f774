import type { Knex } from 'knex';

/**
 * The body store (issue 8): request bodies and, in relay mode 'result', relayed outputs,
 * kept out of Temporal history. One row per request id and kind; the data is AES-256-GCM
 * ciphertext (iv + ciphertext + tag) under the payload codec's key `key_id`.
 * Rows are deleted at settlement (request) and after delivery (output); expires_at bounds
 * what a crash leaves behind.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('request_body', (t) => {
    t.text('request_id').notNullable();
    t.text('kind').notNullable();
    t.text('tenant_id').notNullable();
    t.text('key_id').notNullable();
    t.binary('ciphertext').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.primary(['request_id', 'kind']);
    t.index(['expires_at'], 'request_body_expires_at_idx');
  });
  await knex.raw(`ALTER TABLE request_body ADD CONSTRAINT request_body_kind_check CHECK (kind IN ('request', 'output'))`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('request_body');
}
