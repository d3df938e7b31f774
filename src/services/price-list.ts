/**
 * The price list as the gateway reads it on every request: an in-process copy of
 * `model_price` rows (and of "no such model"), kept for a few seconds. A flood of
 * requests, refused at the edge or not, then costs PostgreSQL nothing. A price set in
 * this process applies to its next request; other API processes see it within
 * `ttlMs`. Admission reserves with the price the request was prepared with, and
 * settlement bills with that same price, so a change never splits one request.
 */
import type { ModelPriceRepository, StoredModelPrice } from '../db/model-price-repository';

/** @default 5000 */
export const PRICE_CACHE_TTL_MS = 5_000;

export function createPriceList(repo: Pick<ModelPriceRepository, 'find' | 'upsert'>, ttlMs = PRICE_CACHE_TTL_MS, now: () => number = Date.now) {
  const cached = new Map<string, { price: StoredModelPrice | null; until: number }>();
  return {
    async find(model: string): Promise<StoredModelPrice | null> {
      const hit = cached.get(model);
      if (hit && hit.until > now()) return hit.price;
      const price = await repo.find(model);
      cached.set(model, { price, until: now() + ttlMs });
      return price;
    },

    /** Writes a price and forgets this process's copy of it. */
    async upsert(...args: Parameters<ModelPriceRepository['upsert']>): Promise<StoredModelPrice> {
      const stored = await repo.upsert(...args);
      cached.delete(stored.model);
      return stored;
    },
  };
}

export type PriceList = ReturnType<typeof createPriceList>;
