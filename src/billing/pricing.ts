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
  /** Price of one million completion tokens, in micros. */
  outputPriceMicrosPerMtok: number;
  /** Hard cap on completion tokens; bounds the worst-case reservation. */
  maxOutputTokens: number;
}

/** Token usage of one request, whatever its source (upstream, tiktoken, estimate). */
export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
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

/**
 * Cost of a request in micros:
 * `ceil((promptTokens * inputPrice + completionTokens * outputPrice) / 1_000_000)`,
 * computed exactly and rounded up once per request (see the module comment).
 *
 * @throws InvalidBillingQuantityError if a count or price is negative, fractional or unsafe.
 * @throws CostOverflowError if the cost exceeds Number.MAX_SAFE_INTEGER micros.
 */
export function costMicros(price: ModelPrice, usage: TokenUsage): number {
  const promptCost = quantity('promptTokens', usage.promptTokens) * quantity('inputPriceMicrosPerMtok', price.inputPriceMicrosPerMtok);
  const completionCost =
    quantity('completionTokens', usage.completionTokens) * quantity('outputPriceMicrosPerMtok', price.outputPriceMicrosPerMtok);
  const cost = ceilDiv(promptCost + completionCost, MICROS_PER_MTOK_DIVISOR);
  if (cost > MAX_SAFE) throw new CostOverflowError(cost);
  return Number(cost);
}

/**
 * The completion tokens admission must assume: the caller's `max_tokens` (or
 * `max_completion_tokens`) when given, capped at the model's `maxOutputTokens`;
 * the model's cap otherwise. The upstream cannot bill more than this.
 */
export function reservedCompletionTokens(price: ModelPrice, requestedMaxTokens?: number): number {
  const cap = Number(quantity('maxOutputTokens', price.maxOutputTokens));
  if (requestedMaxTokens === undefined) return cap;
  return Math.min(Number(quantity('requestedMaxTokens', requestedMaxTokens)), cap);
}

/**
 * Worst-case cost of a request before it runs: its prompt plus the most
 * completion tokens it may produce ({@link reservedCompletionTokens}), priced by
 * {@link costMicros}. Admission reserves this; settlement refunds the difference
 * to the real cost (M3.2).
 */
export function worstCaseReservationMicros(price: ModelPrice, promptTokens: number, requestedMaxTokens?: number): number {
  return costMicros(price, { promptTokens, completionTokens: reservedCompletionTokens(price, requestedMaxTokens) });
}
