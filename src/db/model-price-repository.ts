/**
 * The price list (model_price): what a million prompt, cached prompt and completion tokens
 * of each model cost, in integer micros, and the output cap admission reserves for. Admission
 * and billing read it; `PUT /admin/models/:model` writes it (source 'operator'); the price
 * catalogue (src/billing/catalogue/) fills in well-known models (source 'catalogue') and never
 * overwrites an operator's price; `GET /v1/models` lists it.
 */
import type { Knex } from 'knex';
import type { ModelPrice } from '../billing/pricing';
import { safeInteger } from './ledger-types';

/** Where a price came from: an operator's PUT always wins over the catalogue. */
export const PriceSource = {
  operator: 'operator',
  catalogue: 'catalogue',
} as const;
export type PriceSource = (typeof PriceSource)[keyof typeof PriceSource];

/** The catalogue entry a price was taken from (source 'catalogue' only). */
export interface CatalogueOrigin {
  version: number;
  /** YYYY-MM-DD: when the provider's prices were read. */
  pricedOn: string;
  sourceUrl: string;
}

/** A stored price list entry; `cachedInputPriceMicrosPerMtok` is always the effective price. */
export interface StoredModelPrice extends ModelPrice {
  cachedInputPriceMicrosPerMtok: number;
  source: PriceSource;
  /** null for an operator's price. */
  catalogue: CatalogueOrigin | null;
  createdAt: Date;
  updatedAt: Date;
}

/** One catalogue entry to store (src/billing/catalogue/price-catalogue.ts validates the file). */
export interface CataloguePrice extends ModelPrice {
  cachedInputPriceMicrosPerMtok: number;
  pricedOn: string;
  sourceUrl: string;
}

interface ModelPriceRow {
  model: string;
  input_price_micros_per_mtok: string;
  cached_input_price_micros_per_mtok: string | null;
  output_price_micros_per_mtok: string;
  max_output_tokens: number;
  source: string;
  catalogue_version: number | null;
  catalogue_priced_on: string | Date | null;
  catalogue_source_url: string | null;
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
  for (const field of ['inputPriceMicrosPerMtok', 'outputPriceMicrosPerMtok', 'cachedInputPriceMicrosPerMtok'] as const) {
    const value = price[field];
    if (field === 'cachedInputPriceMicrosPerMtok' && value === undefined) continue;
    if (!Number.isSafeInteger(value) || (value as number) < 0) throw new InvalidModelPriceError(field, value);
  }
  const cap = price.maxOutputTokens;
  if (!Number.isSafeInteger(cap) || cap <= 0 || cap > MAX_OUTPUT_TOKENS) throw new InvalidModelPriceError('maxOutputTokens', cap);
  if (price.model.length === 0) throw new InvalidModelPriceError('model', price.model);
}

/** A DATE column as YYYY-MM-DD, whether pg parsed it (a local-midnight Date) or not. */
function dateText(value: string | Date): string {
  if (typeof value === 'string') return value.slice(0, 10);
  const pad = (n: number): string => String(n).padStart(2, '0');
  return `${value.getFullYear()}-${pad(value.getMonth() + 1)}-${pad(value.getDate())}`;
}

function toModelPrice(row: ModelPriceRow): StoredModelPrice {
  const input = safeInteger('input_price_micros_per_mtok', row.input_price_micros_per_mtok);
  const source = row.source === PriceSource.catalogue ? PriceSource.catalogue : PriceSource.operator;
  return {
    model: row.model,
    inputPriceMicrosPerMtok: input,
    cachedInputPriceMicrosPerMtok: row.cached_input_price_micros_per_mtok === null ? input : safeInteger('cached_input_price_micros_per_mtok', row.cached_input_price_micros_per_mtok),
    outputPriceMicrosPerMtok: safeInteger('output_price_micros_per_mtok', row.output_price_micros_per_mtok),
    maxOutputTokens: safeInteger('max_output_tokens', row.max_output_tokens),
    source,
    catalogue: source === PriceSource.catalogue && row.catalogue_version !== null
      ? { version: row.catalogue_version, pricedOn: row.catalogue_priced_on === null ? '' : dateText(row.catalogue_priced_on), sourceUrl: row.catalogue_source_url ?? '' }
      : null,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/** What `applyCatalogue` did: entries written now, and entries left alone (an operator's price, or as new a catalogue). */
export interface CatalogueApplied {
  written: string[];
  kept: string[];
}

export function createModelPriceRepository(db: Knex) {
  return {
    /**
     * Creates or replaces a model's price as the operator's (source 'operator': no catalogue
     * update touches it again); created_at keeps the first creation time. Without a cached-input
     * price the cached tokens cost the input price.
     */
    async upsert(price: ModelPrice, trx?: Knex.Transaction): Promise<StoredModelPrice> {
      checkPrice(price);
      const q = trx ?? db;
      const values = {
        input_price_micros_per_mtok: String(price.inputPriceMicrosPerMtok),
        cached_input_price_micros_per_mtok: price.cachedInputPriceMicrosPerMtok === undefined ? null : String(price.cachedInputPriceMicrosPerMtok),
        output_price_micros_per_mtok: String(price.outputPriceMicrosPerMtok),
        max_output_tokens: price.maxOutputTokens,
        source: PriceSource.operator,
        catalogue_version: null,
        catalogue_priced_on: null,
        catalogue_source_url: null,
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

    /**
     * Writes a catalogue's prices in one statement: a model not priced yet is added; a model
     * priced by an OLDER catalogue version is updated; an operator's price, or one from this or
     * a newer version (a rolling deploy still running the older file), is never touched. Safe to
     * run from every process at every start, concurrently.
     */
    async applyCatalogue(version: number, prices: readonly CataloguePrice[], trx?: Knex.Transaction): Promise<CatalogueApplied> {
      if (!Number.isSafeInteger(version) || version <= 0) throw new InvalidModelPriceError('version', version);
      if (prices.length === 0) return { written: [], kept: [] };
      for (const price of prices) checkPrice(price);
      const q = trx ?? db;
      const rows = prices.map((price) => ({
        model: price.model,
        input_price_micros_per_mtok: String(price.inputPriceMicrosPerMtok),
        cached_input_price_micros_per_mtok: String(price.cachedInputPriceMicrosPerMtok),
        output_price_micros_per_mtok: String(price.outputPriceMicrosPerMtok),
        max_output_tokens: price.maxOutputTokens,
        source: PriceSource.catalogue,
        catalogue_version: version,
        catalogue_priced_on: price.pricedOn,
        catalogue_source_url: price.sourceUrl,
      }));
      const written = await q<ModelPriceRow>('model_price')
        .insert(rows)
        .onConflict('model')
        .merge(['input_price_micros_per_mtok', 'cached_input_price_micros_per_mtok', 'output_price_micros_per_mtok', 'max_output_tokens', 'catalogue_version', 'catalogue_priced_on', 'catalogue_source_url', 'updated_at'])
        .where('model_price.source', PriceSource.catalogue)
        .andWhere('model_price.catalogue_version', '<', version)
        .returning('model');
      const names = new Set(written.map((r) => r.model));
      return { written: [...names].sort(), kept: prices.map((p) => p.model).filter((m) => !names.has(m)).sort() };
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
