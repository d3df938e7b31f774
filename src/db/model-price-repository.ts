/**
 * The price list (model_price): what a million prompt and completion tokens of each
 * model cost, in integer micros, and the output cap admission reserves for. Admission
 * and billing read it; `PUT /admin/models/:model` writes it; `GET /v1/models` lists it.
 */
import type { Knex } from 'knex';
import type { ModelPrice } from '../billing/pricing';
import { safeInteger } from './ledger-types';

/** A stored price list entry. */
export interface StoredModelPrice extends ModelPrice {
  createdAt: Date;
  updatedAt: Date;
}

interface ModelPriceRow {
  model: string;
  input_price_micros_per_mtok: string;
  output_price_micros_per_mtok: string;
  max_output_tokens: number;
  created_at: Date;
  updated_at: Date;
}

/** Thrown when a price is not a non-negative safe integer or the output cap not a positive one. */
export class InvalidModelPriceError extends Error {
  override name = 'InvalidModelPriceError';

  constructor(
    readonly field: string,
    readonly value: unknown,
  ) {
    super(`${field} is out of range: ${String(value)}`);
  }
}

/** The largest output cap the price list holds: max_output_tokens is an int4 column. */
export const MAX_OUTPUT_TOKENS = 2_147_483_647;

function checkPrice(price: ModelPrice): void {
  for (const field of ['inputPriceMicrosPerMtok', 'outputPriceMicrosPerMtok'] as const) {
    const value = price[field];
    if (!Number.isSafeInteger(value) || value < 0) throw new InvalidModelPriceError(field, value);
  }
  const cap = price.maxOutputTokens;
  if (!Number.isSafeInteger(cap) || cap <= 0 || cap > MAX_OUTPUT_TOKENS) throw new InvalidModelPriceError('maxOutputTokens', cap);
  if (price.model.length === 0) throw new InvalidModelPriceError('model', price.model);
}

function toModelPrice(row: ModelPriceRow): StoredModelPrice {
  return {
    model: row.model,
    inputPriceMicrosPerMtok: safeInteger('input_price_micros_per_mtok', row.input_price_micros_per_mtok),
    outputPriceMicrosPerMtok: safeInteger('output_price_micros_per_mtok', row.output_price_micros_per_mtok),
    maxOutputTokens: safeInteger('max_output_tokens', row.max_output_tokens),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

export function createModelPriceRepository(db: Knex) {
  return {
    /** Creates or replaces a model's price; created_at keeps the first creation time. */
    async upsert(price: ModelPrice, trx?: Knex.Transaction): Promise<StoredModelPrice> {
      checkPrice(price);
      const q = trx ?? db;
      const values = {
        input_price_micros_per_mtok: String(price.inputPriceMicrosPerMtok),
        output_price_micros_per_mtok: String(price.outputPriceMicrosPerMtok),
        max_output_tokens: price.maxOutputTokens,
      };
      const rows = await q<ModelPriceRow>('model_price')
        .insert({ model: price.model, ...values })
        .onConflict('model')
        .merge({ ...values, updated_at: q.fn.now() })
        .returning('*');
      const row = rows[0];
      if (!row) throw new Error('INSERT ... RETURNING returned no row');
      return toModelPrice(row);
    },

    async find(model: string, trx?: Knex.Transaction): Promise<StoredModelPrice | null> {
      const row = await (trx ?? db)<ModelPriceRow>('model_price').where({ model }).first();
      return row ? toModelPrice(row) : null;
    },

    /** Every priced model, by name in code-point order (independent of the database's locale). */
    async list(trx?: Knex.Transaction): Promise<StoredModelPrice[]> {
      const rows = await (trx ?? db)<ModelPriceRow>('model_price').orderByRaw('model COLLATE "C" ASC');
      return rows.map(toModelPrice);
    },
  };
}

export type ModelPriceRepository = ReturnType<typeof createModelPriceRepository>;
