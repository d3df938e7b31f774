/**
 * Admin price list routes: `PUT /admin/models/:model` creates or replaces a model's price
 * (integer micros per million tokens: input, cached input, output) and its output cap, as the
 * operator's (the price catalogue never overwrites it); `GET /admin/models` and
 * `GET /admin/models/:model` show every price with where it came from. A model without a
 * price cannot be billed, so it is refused at admission (404 model_not_found).
 */
import { Router } from 'express';
import { z } from 'zod';
import { MAX_OUTPUT_TOKENS, type ModelPriceRepository, type StoredModelPrice } from '../../db/model-price-repository';
import { NotFoundError } from '../errors';
import { modelNameSchema, modelPriceBodySchema } from '../schemas';

/** The answer of `PUT /admin/models/:model` and each entry of `GET /admin/models`. */
export interface ModelPriceView {
  model: string;
  input_price_micros_per_mtok: number;
  /** The effective price of a cached prompt token (the input price unless set). */
  cached_input_price_micros_per_mtok: number;
  output_price_micros_per_mtok: number;
  max_output_tokens: number;
  /** 'operator' (set by PUT: never overwritten by the catalogue) or 'catalogue'. */
  source: StoredModelPrice['source'];
  /** The catalogue entry of a 'catalogue' price; null for an operator's. */
  catalogue: { version: number; priced_on: string; source_url: string } | null;
  updated_at: string;
}

const modelParamsSchema = z.object({ model: modelNameSchema });
// Refuse what the price list cannot hold with a 400, not a database error.
const storableModelPriceSchema = modelPriceBodySchema.refine((body) => body.max_output_tokens <= MAX_OUTPUT_TOKENS, {
  message: `must be at most ${MAX_OUTPUT_TOKENS}`,
  path: ['max_output_tokens'],
});

export function toModelPriceView(price: StoredModelPrice): ModelPriceView {
  return {
    model: price.model,
    input_price_micros_per_mtok: price.inputPriceMicrosPerMtok,
    cached_input_price_micros_per_mtok: price.cachedInputPriceMicrosPerMtok,
    output_price_micros_per_mtok: price.outputPriceMicrosPerMtok,
    max_output_tokens: price.maxOutputTokens,
    source: price.source,
    catalogue: price.catalogue && { version: price.catalogue.version, priced_on: price.catalogue.pricedOn, source_url: price.catalogue.sourceUrl },
    updated_at: price.updatedAt.toISOString(),
  };
}

export function adminModelRoutes(
  modelPrices: Pick<ModelPriceRepository, 'upsert'>,
  reader?: Pick<ModelPriceRepository, 'find' | 'list'>,
): Router {
  const router = Router();

  router.put('/models/:model', async (req, res) => {
    const { model } = modelParamsSchema.parse(req.params);
    const body = storableModelPriceSchema.parse(req.body);
    const stored = await modelPrices.upsert({
      model,
      inputPriceMicrosPerMtok: body.input_price_micros_per_mtok,
      ...(body.cached_input_price_micros_per_mtok !== undefined ? { cachedInputPriceMicrosPerMtok: body.cached_input_price_micros_per_mtok } : {}),
      outputPriceMicrosPerMtok: body.output_price_micros_per_mtok,
      maxOutputTokens: body.max_output_tokens,
    });
    res.json(toModelPriceView(stored));
  });

  if (reader) {
    router.get('/models', async (_req, res) => {
      res.json({ object: 'list', data: (await reader.list()).map(toModelPriceView) });
    });

    router.get('/models/:model', async (req, res) => {
      const { model } = modelParamsSchema.parse(req.params);
      const price = await reader.find(model);
      if (!price) throw new NotFoundError(`model ${model}`);
      res.json(toModelPriceView(price));
    });
  }

  return router;
}
