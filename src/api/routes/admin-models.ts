/**
 * Admin price list route: `PUT /admin/models/:model` creates or replaces a model's
 * price (integer micros per million tokens) and its output cap. A model without a
 * price cannot be billed, so it is refused at admission (404 model_not_found).
 */
import { Router } from 'express';
import { z } from 'zod';
import { MAX_OUTPUT_TOKENS, type ModelPriceRepository, type StoredModelPrice } from '../../db/model-price-repository';
import { modelNameSchema, modelPriceBodySchema } from '../schemas';

/** The answer of `PUT /admin/models/:model`. */
export interface ModelPriceView {
  model: string;
  input_price_micros_per_mtok: number;
  output_price_micros_per_mtok: number;
  max_output_tokens: number;
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
    output_price_micros_per_mtok: price.outputPriceMicrosPerMtok,
    max_output_tokens: price.maxOutputTokens,
  };
}

export function adminModelRoutes(modelPrices: Pick<ModelPriceRepository, 'upsert'>): Router {
  const router = Router();

  router.put('/models/:model', async (req, res) => {
    const { model } = modelParamsSchema.parse(req.params);
    const body = storableModelPriceSchema.parse(req.body);
    const stored = await modelPrices.upsert({
      model,
      inputPriceMicrosPerMtok: body.input_price_micros_per_mtok,
      outputPriceMicrosPerMtok: body.output_price_micros_per_mtok,
      maxOutputTokens: body.max_output_tokens,
    });
    res.json(toModelPriceView(stored));
  });

  return router;
}
