/**
 * `GET /v1/models` in OpenAI's list shape: every model of the price list, since only
 * a priced model can be billed, each with its prices (issue 11: a tenant can see what a
 * cached prompt token costs). Needs an API key like every gateway route.
 */
import { Router, type RequestHandler } from 'express';
import type { ModelPriceRepository } from '../../db/model-price-repository';

/** The `owned_by` of every listed model: this gateway serves (and bills) them. */
export const MODEL_OWNER = 'durable-billing';

/** One entry of OpenAI's model list. */
export interface ModelView {
  id: string;
  object: 'model';
  /** Unix seconds: when the model was first priced. */
  created: number;
  owned_by: typeof MODEL_OWNER;
  /** What the gateway bills for the model, integer micros per million tokens (beyond OpenAI's shape; clients ignore it). */
  pricing: {
    input_price_micros_per_mtok: number;
    cached_input_price_micros_per_mtok: number;
    output_price_micros_per_mtok: number;
    max_output_tokens: number;
  };
}

export interface ModelListView {
  object: 'list';
  data: ModelView[];
}

export interface ModelsRouterDeps {
  modelPrices: Pick<ModelPriceRepository, 'list'>;
  /**
   * The API-key authenticator (createApiKeyAuthenticator). When given, the route runs
   * it itself; leave it out only if the app authenticates /v1 before this router.
   */
  authenticate?: RequestHandler;
}

export function modelsRouter(deps: ModelsRouterDeps): Router {
  const { modelPrices } = deps;
  const router = Router();
  const guards: RequestHandler[] = deps.authenticate ? [deps.authenticate] : [];

  router.get('/v1/models', ...guards, async (_req, res) => {
    const prices = await modelPrices.list();
    const body: ModelListView = {
      object: 'list',
      data: prices.map((price) => ({
        id: price.model,
        object: 'model',
        created: Math.floor(price.createdAt.getTime() / 1000),
        owned_by: MODEL_OWNER,
        pricing: {
          input_price_micros_per_mtok: price.inputPriceMicrosPerMtok,
          cached_input_price_micros_per_mtok: price.cachedInputPriceMicrosPerMtok,
          output_price_micros_per_mtok: price.outputPriceMicrosPerMtok,
          max_output_tokens: price.maxOutputTokens,
        },
      })),
    };
    res.json(body);
  });

  return router;
}
