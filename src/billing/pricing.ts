/**
 * Billing math: what a request costs, and what admission reserves for it.
 *
 * All money is integer micros (1 unit = 1,000,000 micros). Prices are quoted in
 * micros per million tokens ("per Mtok"), so a cost is
 * `(tokens * microsPerMtok) / 1_000_000` micros, which is rarely a whole number.
 *
 * Rounding rule: the cost of a request is rounded UP to a whole micro ONCE, on
 * the request's total (prompt and completion together); never per token and
 * never per side. Rounding per token would overcharge a 1,000-token request up
 * to 1,000 times as much as rounding once; rounding up (not to nearest) makes
 * sure the ledger never books less than the price list says. See docs/pricing.md.
 *
 * The products are computed with BigInt: tokens * price easily exceeds 2^53
 * (10^6 tokens at 10^10 micros/Mtok), where doubles silently lose the last digits.
 */

const MICROS_PER_MTOK_DIVISOR = 1_000_000n;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A model's price list entry (from the `PUT /admin/models/:model` contract). */
export interface ModelPrice {
  model: string;
  /** Price of one million prompt tokens, in micros. */
  inputPriceMicrosPerMtok: number;
  /**
   * Price of one million prompt tokens the upstream served from its prompt cache
   * (`prompt_tokens_details.cached_tokens`), in micros. Absent: the input price (a cached
   * token is billed like any other). Inputs recorded before token classes carry none.
   */
  cachedInputPriceMicrosPerMtok?: number;
  /** Price of one million completion tokens, in micros. */
  outputPriceMicrosPerMtok: number;
  /** Hard cap on completion tokens; bounds the worst-case reservation. */
  maxOutputTokens: number;
}

/** Token usage of one request, whatever its source (upstream, tiktoken, estimate). */
export interface TokenUsage {
  /** Every prompt token, cached ones included (OpenAI's `prompt_tokens`). */
  promptTokens: number;
  /** Every completion token, reasoning ones included (OpenAI's `completion_tokens`). */
  completionTokens: number;
  /** Of `promptTokens`, those served from the prompt cache (priced at the cached-input price). @default 0 */
  cachedPromptTokens?: number;
}

/** Thrown when a token count or price is not a non-negative safe integer. */
export class InvalidBillingQuantityError extends Error {
  override readonly name = 'InvalidBillingQuantityError';
  constructor(field: string, value: unknown) {
    super(`${field} must be a non-negative safe integer, got ${String(value)}`);
  }
}

/** Thrown when a cost in micros does not fit in a JavaScript safe integer. */
export class CostOverflowError extends Error {
  override readonly name = 'CostOverflowError';
  constructor(readonly costMicros: bigint) {
    super(`cost of ${costMicros.toString()} micros exceeds Number.MAX_SAFE_INTEGER`);
  }
}

function quantity(field: string, value: number): bigint {
  if (!Number.isSafeInteger(value) || value < 0) throw new InvalidBillingQuantityError(field, value);
  return BigInt(value);
}

/** Ceiling division of non-negative BigInts. */
function ceilDiv(numerator: bigint, divisor: bigint): bigint {
  return (numerator + divisor - 1n) / divisor;
}

/** The cached-input price of a model: its own when set, else the input price. */
export function cachedInputPrice(price: ModelPrice): number {
  return price.cachedInputPriceMicrosPerMtok ?? price.inputPriceMicrosPerMtok;
}

/**
 * Cost of a request in micros:
 * `ceil((uncachedPromptTokens * inputPrice + cachedPromptTokens * cachedInputPrice
 *        + completionTokens * outputPrice) / 1_000_000)`,
 * where `uncachedPromptTokens = promptTokens - cachedPromptTokens`; computed exactly and
 * rounded up once per request (see the module comment). Reasoning and audio tokens are
 * part of the completion and prompt counts and priced with them, as providers bill them.
 *
 * @throws InvalidBillingQuantityError if a count or price is negative, fractional or unsafe,
 *   or more prompt tokens are cached than the prompt has.
 * @throws CostOverflowError if the cost exceeds Number.MAX_SAFE_INTEGER micros.
 */
export function costMicros(price: ModelPrice, usage: TokenUsage): number {
  const prompt = quantity('promptTokens', usage.promptTokens);
  const cached = quantity('cachedPromptTokens', usage.cachedPromptTokens ?? 0);
  if (cached > prompt) throw new InvalidBillingQuantityError('cachedPromptTokens', usage.cachedPromptTokens);
  const promptCost =
    (prompt - cached) * quantity('inputPriceMicrosPerMtok', price.inputPriceMicrosPerMtok)
    + cached * quantity('cachedInputPriceMicrosPerMtok', cachedInputPrice(price));
  const completionCost =
    quantity('completionTokens', usage.completionTokens) * quantity('outputPriceMicrosPerMtok', price.outputPriceMicrosPerMtok);
  const cost = ceilDiv(promptCost + completionCost, MICROS_PER_MTOK_DIVISOR);
  if (cost > MAX_SAFE) throw new CostOverflowError(cost);
  return Number(cost);
}

/**
 * The completion tokens admission must assume for ONE choice: the caller's `max_tokens`
 * (or `max_completion_tokens`) when given, capped at the model's `maxOutputTokens`;
 * the model's cap otherwise. It is what the upstream receives as its cap, per choice.
 */
export function reservedCompletionTokens(price: ModelPrice, requestedMaxTokens?: number): number {
  const cap = Number(quantity('maxOutputTokens', price.maxOutputTokens));
  if (requestedMaxTokens === undefined) return cap;
  return Math.min(Number(quantity('requestedMaxTokens', requestedMaxTokens)), cap);
}

/**
 * Worst-case cost of a request before it runs: its prompt plus the most completion
 * tokens it may produce, `choices` (OpenAI's `n`) times the per-choice cap
 * ({@link reservedCompletionTokens}), since every choice may run to the cap. The prompt is
 * priced as if nothing were cached (at the higher of the input and cached-input prices,
 * should an operator set the cached one higher), so no cache report can exceed it. Priced
 * by {@link costMicros}. Admission reserves this; settlement refunds the difference to the
 * real cost (M3.2).
 */
export function worstCaseReservationMicros(price: ModelPrice, promptTokens: number, requestedMaxTokens?: number, choices = 1): number {
  const perChoice = reservedCompletionTokens(price, requestedMaxTokens);
  return worstCaseCostMicros(price, promptTokens, perChoice * Number(quantity('choices', choices)));
}

/**
 * The cost of exactly these counts with the prompt priced as if nothing were cached, at the
 * higher of the input and cached-input prices: no cache report can make the bill exceed it.
 * Operations whose output cap is known otherwise (embeddings: none) reserve this.
 */
export function worstCaseCostMicros(price: ModelPrice, promptTokens: number, completionTokens: number): number {
  const inputPriceMicrosPerMtok = Math.max(price.inputPriceMicrosPerMtok, cachedInputPrice(price));
  return costMicros({ ...price, inputPriceMicrosPerMtok, cachedInputPriceMicrosPerMtok: undefined }, { promptTokens, completionTokens });
}

/** The price a workflow input carries: the fields billing reads, the cached-input price resolved. */
export function inputPriceOf(price: ModelPrice): ModelPrice {
  return {
    model: price.model,
    inputPriceMicrosPerMtok: price.inputPriceMicrosPerMtok,
    cachedInputPriceMicrosPerMtok: cachedInputPrice(price),
    outputPriceMicrosPerMtok: price.outputPriceMicrosPerMtok,
    maxOutputTokens: price.maxOutputTokens,
  };
}
