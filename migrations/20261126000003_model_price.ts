import type { Knex } from 'knex';

/** Model prices in integer micros per million tokens, and the output cap used for worst-case reservations. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('model_price', (t) => {
    t.text('model').primary();
    t.bigInteger('input_price_micros_per_mtok').notNullable();
    t.bigInteger('output_price_micros_per_mtok').notNullable();
    t.integer('max_output_tokens').notNullable();
    t.timestamps(true, true);
  });
  await knex.raw(`ALTER TABLE model_price
    ADD CONSTRAINT model_price_nonnegative CHECK (input_price_micros_per_mtok >= 0 AND output_price_micros_per_mtok >= 0),
    ADD CONSTRAINT model_price_max_output_positive CHECK (max_output_tokens > 0)`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('model_price');
}
