import type { Knex } from 'knex';

/**
 * Upstream channels (issue 10, M8): the upstreams the gateway routes to. The channel's
 * own upstream API key is stored only encrypted under the payload codec's keys
 * (api_key_key_id names the key; iv + ciphertext + tag, src/codec/body-cipher.ts, bound
 * to the channel id), never in plain text. `models` lists the model names the channel
 * serves; `*` serves any model.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('upstream_channel', (t) => {
    t.text('channel_id').primary();
    t.text('base_url').notNullable();
    t.text('api_key_key_id').nullable();
    t.binary('api_key_ciphertext').nullable();
    t.specificType('models', 'text[]').notNullable();
    t.integer('weight').notNullable();
    t.boolean('enabled').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw(`ALTER TABLE upstream_channel
    ADD CONSTRAINT upstream_channel_api_key_pair CHECK ((api_key_key_id IS NULL) = (api_key_ciphertext IS NULL)),
    ADD CONSTRAINT upstream_channel_weight_range CHECK (weight >= 1 AND weight <= 1000000),
    ADD CONSTRAINT upstream_channel_models_nonempty CHECK (cardinality(models) >= 1)`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('upstream_channel');
}
