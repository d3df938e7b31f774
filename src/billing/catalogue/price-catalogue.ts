/**
 * The price catalogue (issue 11): a versioned data file (./prices.json) of well-known models
 * (OpenAI, Anthropic, Google, Mistral, DeepSeek) with integer micros per million tokens for
 * input, cached input and output, the output cap, the date the prices were taken and their
 * source page. A fresh stack can bill these models at once instead of answering
 * `model_not_found` until an operator types prices by hand.
 *
 * Applied at every start of every role, after the migrations (src/roles/index.ts,
 * src/db/migrate-cli.ts), in one idempotent statement (ModelPriceRepository.applyCatalogue):
 * - a model not priced yet is added (source 'catalogue', with the file's version);
 * - a model priced by an older catalogue version takes the new prices;
 * - an operator's price (PUT /admin/models/:model) is never overwritten, and neither is a row
 *   written by a newer version (two versions of the app running during a rolling deploy agree).
 * A model the catalogue drops keeps its last catalogue price (removing it would refuse requests
 * that were billed a moment ago); a model in neither place stays unpriced: 404 `model_not_found`,
 * never billed at 0.
 *
 * To change a price: edit the entry, its `priced_on` and `source_url`, and raise `version`.
 */
import { z } from 'zod';
import type { CatalogueApplied, CataloguePrice, ModelPriceRepository } from '../../db/model-price-repository';
import { MAX_OUTPUT_TOKENS } from '../../db/model-price-repository';
import catalogueFile from './prices.json';

const micros = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const isoDate = z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'must be YYYY-MM-DD').refine((d) => !Number.isNaN(Date.parse(`${d}T00:00:00Z`)), 'must be a real date');

const catalogueEntrySchema = z
  .object({
    model: z.string().min(1).max(200),
    provider: z.string().min(1),
    // A catalogue price of 0 input would bill a model as free: never from the catalogue.
    input_price_micros_per_mtok: micros.positive(),
    cached_input_price_micros_per_mtok: micros,
    output_price_micros_per_mtok: micros,
    max_output_tokens: z.number().int().positive().max(MAX_OUTPUT_TOKENS),
    priced_on: isoDate,
    source_url: z.string().url().startsWith('https://'),
    note: z.string().optional(),
  })
  .strict()
  .refine((e) => e.cached_input_price_micros_per_mtok <= e.input_price_micros_per_mtok, {
    message: 'a cached input token cannot cost more than an input token',
    path: ['cached_input_price_micros_per_mtok'],
  });

export const priceCatalogueSchema = z
  .object({
    version: z.number().int().positive(),
    currency: z.literal('USD'),
    unit: z.string(),
    about: z.string().optional(),
    models: z.array(catalogueEntrySchema).min(1),
  })
  .strict()
  .superRefine((catalogue, ctx) => {
    const seen = new Set<string>();
    catalogue.models.forEach((entry, index) => {
      if (seen.has(entry.model)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['models', index, 'model'], message: `${entry.model} is listed twice` });
      seen.add(entry.model);
    });
  });

/** A validated catalogue: its version and its prices, ready for the price list. */
export interface PriceCatalogue {
  version: number;
  prices: CataloguePrice[];
}

/** Validates a catalogue document (the shipped file by default); throws a ZodError naming the bad entry. */
export function parsePriceCatalogue(raw: unknown = catalogueFile): PriceCatalogue {
  const doc = priceCatalogueSchema.parse(raw);
  return {
    version: doc.version,
    prices: doc.models.map((e) => ({
      model: e.model,
      inputPriceMicrosPerMtok: e.input_price_micros_per_mtok,
      cachedInputPriceMicrosPerMtok: e.cached_input_price_micros_per_mtok,
      outputPriceMicrosPerMtok: e.output_price_micros_per_mtok,
      maxOutputTokens: e.max_output_tokens,
      pricedOn: e.priced_on,
      sourceUrl: e.source_url,
    })),
  };
}

/** Writes the catalogue into the price list (see the module comment); returns what it wrote and what it left alone. */
export async function applyPriceCatalogue(
  prices: Pick<ModelPriceRepository, 'applyCatalogue'>,
  catalogue: PriceCatalogue = parsePriceCatalogue(),
): Promise<CatalogueApplied & { version: number }> {
  const applied = await prices.applyCatalogue(catalogue.version, catalogue.prices);
  return { ...applied, version: catalogue.version };
}
