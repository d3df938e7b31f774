/**
 * Prompt tokens of one image, by OpenAI's documented rule for its tile-based vision models
 * (GPT-4o, GPT-4.1, GPT-4 Turbo with vision; "Calculating costs" in the images and vision
 * guide), the rule docs/pricing.md states and the coverage issue shares:
 *
 * - `detail: "low"`: {@link LOW_DETAIL_IMAGE_TOKENS} (85), whatever the size;
 * - otherwise (`high`, `auto` or absent, counted as `high`: `auto` may choose it): the image is
 *   scaled down to fit in a 2048 x 2048 square, then down so that its shortest side is 768 px,
 *   and costs 85 + 170 for every 512 px tile that covers it. Images are never scaled up
 *   (a 300 x 200 image is one tile: 255 tokens). Scaled sides are kept exact (not rounded to
 *   whole pixels), so the count is never below that of any rounding the provider may use.
 *
 * With the size unknown (an http(s) URL: the gateway does not fetch customer images), the
 * most the rule can charge: after scaling the long side is at most 2048 px (4 tiles) and the
 * short side at most 768 px (2 tiles), so 8 tiles, 85 + 8 x 170 = 1445 tokens
 * ({@link WORST_CASE_IMAGE_TOKENS}, computed below from the same constants).
 *
 * Other OpenAI models count images otherwise: gpt-4o-mini with the same tiles at many times
 * the tokens (so that an image costs about as much as on gpt-4o), the patch-based models
 * (GPT-4.1 mini and nano, the GPT-5 minis) in 32 px patches, capped at 1536, times a model
 * multiplier. This rule is applied to every model; where a provider bills an image higher, the
 * reservation is below the bill and settlement charges the difference as an overage
 * (billing_overage_micros_total, docs/pricing.md).
 */
import type { ImageSize } from './image-dimensions';

export const LOW_DETAIL_IMAGE_TOKENS = 85;
export const IMAGE_BASE_TOKENS = 85;
export const IMAGE_TILE_TOKENS = 170;
const TILE_PX = 512;
const FIT_PX = 2048;
const SHORT_SIDE_PX = 768;

/** The most tiles the rule can count: the longest side and the shortest side after scaling, in tiles. */
const MAX_TILES = Math.ceil(FIT_PX / TILE_PX) * Math.ceil(SHORT_SIDE_PX / TILE_PX);
/** The most tokens one image can cost by the rule (1445). */
export const WORST_CASE_IMAGE_TOKENS = IMAGE_BASE_TOKENS + MAX_TILES * IMAGE_TILE_TOKENS;

export type ImageDetail = 'low' | 'high' | 'auto';

/** The 512 px tiles that cover an image of this size after the rule's two scalings. */
export function imageTiles(size: ImageSize): number {
  let long = Math.max(size.width, size.height);
  let short = Math.min(size.width, size.height);
  if (long > FIT_PX) {
    short = (short * FIT_PX) / long;
    long = FIT_PX;
  }
  if (short > SHORT_SIDE_PX) {
    long = (long * SHORT_SIDE_PX) / short;
    short = SHORT_SIDE_PX;
  }
  return Math.ceil(long / TILE_PX) * Math.ceil(short / TILE_PX);
}

/** Tokens of a high-detail image of this size. */
export function highDetailImageTokens(size: ImageSize): number {
  return IMAGE_BASE_TOKENS + imageTiles(size) * IMAGE_TILE_TOKENS;
}

/**
 * Tokens of one image part. `size` undefined = unknown: `worstCaseTokens` (the rule's
 * {@link WORST_CASE_IMAGE_TOKENS} unless IMAGE_WORST_CASE_TOKENS sets another).
 */
export function imagePartTokens(detail: unknown, size: ImageSize | undefined, worstCaseTokens = WORST_CASE_IMAGE_TOKENS): number {
  if (detail === 'low') return LOW_DETAIL_IMAGE_TOKENS;
  return size ? highDetailImageTokens(size) : worstCaseTokens;
}
