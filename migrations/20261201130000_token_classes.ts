import type { Knex } from 'knex';

/**
 * Issue 11: token classes and the price catalogue.
 * - billing_transaction keeps each token class of a settled request: cached prompt tokens
 *   (priced at the cached-input price), reasoning tokens (billed as output), audio prompt and
 *   completion tokens. Each is part of prompt_tokens or completion_tokens, never more; null on
 *   rows settled before (and while pending or voided).
 * - model_price gains the cached-input price (null: the input price) and where a price came
 *   from: 'operator' (PUT /admin/models/:model, never overwritten by the catalogue) or
 *   'catalogue' (src/billing/catalogue/prices.json) with the catalogue's version, the date its
 *   prices were taken and their source URL. Every existing row was set by an operator.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('billing_transaction', (t) => {
    t.integer('cached_prompt_tokens').nullable();
    t.integer('reasoning_tokens').nullable();
    t.integer('audio_prompt_tokens').nullable();
    t.integer('audio_completion_tokens').nullable();
  });
  await knex.raw(`ALTER TABLE billing_transaction
    ADD CONSTRAINT billing_transaction_token_classes CHECK (
      (cached_prompt_tokens IS NULL OR (cached_prompt_tokens >= 0 AND cached_prompt_tokens <= COALESCE(prompt_tokens, 0)))
      AND (audio_prompt_tokens IS NULL OR (audio_prompt_tokens >= 0 AND audio_prompt_tokens <= COALESCE(prompt_tokens, 0)))
      AND (reasoning_tokens IS NULL OR (reasoning_tokens >= 0 AND reasoning_tokens <= COALESCE(completion_tokens, 0)))
      AND (audio_completion_tokens IS NULL OR (audio_completion_tokens >= 0 AND audio_completion_tokens <= COALESCE(completion_tokens, 0))))`);

  await knex.schema.alterTable('model_price', (t) => {
    t.bigInteger('cached_input_price_micros_per_mtok').nullable();
    t.text('source').notNullable().defaultTo('operator');
    t.integer('catalogue_version').nullable();
    t.date('catalogue_priced_on').nullable();
    t.text('catalogue_source_url').nullable();
  });
  await knex.raw(`ALTER TABLE model_price
    ADD CONSTRAINT model_price_cached_nonnegative CHECK (cached_input_price_micros_per_mtok IS NULL OR cached_input_price_micros_per_mtok >= 0),
    ADD CONSTRAINT model_price_source CHECK (source IN ('operator', 'catalogue')),
    ADD CONSTRAINT model_price_catalogue_version CHECK ((source = 'catalogue') = (catalogue_version IS NOT NULL))`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`ALTER TABLE model_price
    DROP CONSTRAINT model_price_cached_nonnegative, DROP CONSTRAINT model_price_source, DROP CONSTRAINT model_price_catalogue_version`);
  await knex.schema.alterTable('model_price', (t) => {
    t.dropColumns('cached_input_price_micros_per_mtok', 'source', 'catalogue_version', 'catalogue_priced_on', 'catalogue_source_url');
  });
  await knex.raw('ALTER TABLE billing_transaction DROP CONSTRAINT billing_transaction_token_classes');
  await knex.schema.alterTable('billing_transaction', (t) => {
    t.dropColumns('cached_prompt_tokens', 'reasoning_tokens', 'audio_prompt_tokens', 'audio_completion_tokens');
  });
}
