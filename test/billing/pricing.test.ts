import {
  CostOverflowError,
  InvalidBillingQuantityError,
  costMicros,
  reservedCompletionTokens,
  worstCaseReservationMicros,
  type ModelPrice,
} from '../../src/billing/pricing';

// $0.15 / Mtok in, $0.60 / Mtok out: the worked example of docs/pricing.md.
const mini: ModelPrice = { model: 'gpt-4o-mini', inputPriceMicrosPerMtok: 150_000, outputPriceMicrosPerMtok: 600_000, maxOutputTokens: 16_384 };
// $2.50 / Mtok in, $10 / Mtok out.
const large: ModelPrice = { model: 'gpt-4o', inputPriceMicrosPerMtok: 2_500_000, outputPriceMicrosPerMtok: 10_000_000, maxOutputTokens: 16_384 };

describe('costMicros (money is exact, rounded up once per request)', () => {
  it('prices a request whose exact cost is a whole number of micros', () => {
    expect(costMicros(large, { promptTokens: 1_234, completionTokens: 567 })).toBe(8_755);
  });

  it('rounds the total up once: the docs/pricing.md worked example costs 526, not 527 or 1801', () => {
    expect(costMicros(mini, { promptTokens: 1_234, completionTokens: 567 })).toBe(526);
  });

  it('rounds a single cheap token up to 1 micro', () => {
    expect(costMicros(mini, { promptTokens: 1, completionTokens: 0 })).toBe(1);
  });

  it('does not round per token: 1000 tokens at 0.15 micro each cost 150, not 1000', () => {
    expect(costMicros(mini, { promptTokens: 1_000, completionTokens: 0 })).toBe(150);
  });

  it('adds nothing when the total is already exact (no off-by-one from the ceiling)', () => {
    expect(costMicros(mini, { promptTokens: 20, completionTokens: 0 })).toBe(3);
    expect(costMicros(mini, { promptTokens: 21, completionTokens: 0 })).toBe(4);
  });

  it('costs 0 for zero tokens and for a free model', () => {
    expect(costMicros(mini, { promptTokens: 0, completionTokens: 0 })).toBe(0);
    const free: ModelPrice = { ...mini, inputPriceMicrosPerMtok: 0, outputPriceMicrosPerMtok: 0 };
    expect(costMicros(free, { promptTokens: 1_000_000, completionTokens: 1_000_000 })).toBe(0);
  });

  it('is exact where doubles are not: products far above 2^53', () => {
    // 2^53 - 1 tokens at 3 micros/Mtok: the product 27021597764222973 is not a representable double.
    const price: ModelPrice = { ...mini, inputPriceMicrosPerMtok: 3, outputPriceMicrosPerMtok: 0 };
    const exact = (BigInt(Number.MAX_SAFE_INTEGER) * 3n + 999_999n) / 1_000_000n;
    expect(costMicros(price, { promptTokens: Number.MAX_SAFE_INTEGER, completionTokens: 0 })).toBe(Number(exact));
    expect(costMicros(price, { promptTokens: Number.MAX_SAFE_INTEGER, completionTokens: 0 })).toBe(27_021_597_765);
  });

  it('returns exactly Number.MAX_SAFE_INTEGER when the cost is exactly that', () => {
    const price: ModelPrice = { ...mini, inputPriceMicrosPerMtok: 1_000_000, outputPriceMicrosPerMtok: 0 };
    expect(costMicros(price, { promptTokens: Number.MAX_SAFE_INTEGER, completionTokens: 0 })).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('throws CostOverflowError one micro past Number.MAX_SAFE_INTEGER', () => {
    const price: ModelPrice = { ...mini, inputPriceMicrosPerMtok: 1_000_000, outputPriceMicrosPerMtok: 1_000_000 };
    const usage = { promptTokens: Number.MAX_SAFE_INTEGER, completionTokens: 1 };
    expect(() => costMicros(price, usage)).toThrow(CostOverflowError);
    try {
      costMicros(price, usage);
    } catch (err) {
      expect((err as CostOverflowError).costMicros).toBe(BigInt(Number.MAX_SAFE_INTEGER) + 1n);
    }
  });

  it.each([
    ['negative prompt tokens', { promptTokens: -1, completionTokens: 0 }],
    ['fractional completion tokens', { promptTokens: 1, completionTokens: 0.5 }],
    ['unsafe prompt tokens', { promptTokens: 2 ** 53, completionTokens: 0 }],
    ['NaN completion tokens', { promptTokens: 1, completionTokens: Number.NaN }],
  ])('rejects %s with InvalidBillingQuantityError', (_label, usage) => {
    expect(() => costMicros(mini, usage)).toThrow(InvalidBillingQuantityError);
  });

  it('rejects a fractional or negative price', () => {
    expect(() => costMicros({ ...mini, inputPriceMicrosPerMtok: 0.1 }, { promptTokens: 1, completionTokens: 0 })).toThrow(
      'inputPriceMicrosPerMtok must be a non-negative safe integer, got 0.1',
    );
    expect(() => costMicros({ ...mini, outputPriceMicrosPerMtok: -5 }, { promptTokens: 0, completionTokens: 1 })).toThrow(
      InvalidBillingQuantityError,
    );
  });
});

describe('worstCaseReservationMicros (admission reserves prompt + output cap)', () => {
  it('reserves the requested max_tokens when below the model cap (docs example: 786)', () => {
    expect(worstCaseReservationMicros(mini, 1_234, 1_000)).toBe(786);
  });

  it('reserves the model cap when max_tokens is absent (docs example: 10016)', () => {
    expect(worstCaseReservationMicros(mini, 1_234)).toBe(10_016);
  });

  it('caps a requested max_tokens above the model cap', () => {
    expect(worstCaseReservationMicros(mini, 1_234, 50_000)).toBe(10_016);
    expect(reservedCompletionTokens(mini, 50_000)).toBe(16_384);
  });

  it('uses the requested value exactly at the cap and just below it', () => {
    expect(reservedCompletionTokens(mini, 16_384)).toBe(16_384);
    expect(reservedCompletionTokens(mini, 16_383)).toBe(16_383);
    expect(worstCaseReservationMicros(mini, 0, 16_383)).toBe(9_830); // 9,829.8 rounded up
  });

  it('is never below the settled cost of any allowed completion', () => {
    const reservation = worstCaseReservationMicros(large, 500, 200);
    expect(reservation).toBe(3_250);
    expect(costMicros(large, { promptTokens: 500, completionTokens: 200 })).toBe(reservation);
    expect(costMicros(large, { promptTokens: 500, completionTokens: 199 })).toBe(3_240);
  });

  it('rejects a fractional requested max_tokens', () => {
    expect(() => worstCaseReservationMicros(mini, 10, 1.5)).toThrow(InvalidBillingQuantityError);
  });

  it('throws CostOverflowError when the worst case cannot be represented', () => {
    const huge: ModelPrice = { ...mini, outputPriceMicrosPerMtok: Number.MAX_SAFE_INTEGER, maxOutputTokens: 2_000_000 };
    expect(() => worstCaseReservationMicros(huge, 0)).toThrow(CostOverflowError);
  });
});

describe('token classes and n choices (issue 11)', () => {
  // gpt-4o-mini's catalogue price: $0.075 / Mtok for a cached prompt token.
  const cachedMini: ModelPrice = { ...mini, cachedInputPriceMicrosPerMtok: 75_000 };

  it('prices cached prompt tokens at the cached-input price, rounding the total up once', () => {
    // (234 * 150,000 + 1,000 * 75,000 + 567 * 600,000) / 1e6 = (35,100,000 + 75,000,000 + 340,200,000) / 1e6 = 450.3 -> 451
    expect(costMicros(cachedMini, { promptTokens: 1_234, completionTokens: 567, cachedPromptTokens: 1_000 })).toBe(451);
    // Without a cached price a cached token costs the input price: the uncached figure, 526.
    expect(costMicros(mini, { promptTokens: 1_234, completionTokens: 567, cachedPromptTokens: 1_000 })).toBe(526);
    expect(costMicros(cachedMini, { promptTokens: 1_234, completionTokens: 567, cachedPromptTokens: 0 })).toBe(526);
  });

  it('refuses more cached tokens than the prompt has, and a bad count', () => {
    expect(() => costMicros(cachedMini, { promptTokens: 10, completionTokens: 0, cachedPromptTokens: 11 })).toThrow(InvalidBillingQuantityError);
    expect(() => costMicros(cachedMini, { promptTokens: 10, completionTokens: 0, cachedPromptTokens: 1.5 })).toThrow(InvalidBillingQuantityError);
    expect(() => costMicros({ ...mini, cachedInputPriceMicrosPerMtok: -1 }, { promptTokens: 10, completionTokens: 0, cachedPromptTokens: 1 })).toThrow(InvalidBillingQuantityError);
  });

  it('reserves every choice at the cap: n multiplies the output side only', () => {
    // ceil((1,234 * 150,000 + 3 * 1,000 * 600,000) / 1e6) = ceil(185.1 + 1,800) = 1,986
    expect(worstCaseReservationMicros(mini, 1_234, 1_000, 3)).toBe(1_986);
    expect(worstCaseReservationMicros(mini, 1_234, 1_000, 1)).toBe(worstCaseReservationMicros(mini, 1_234, 1_000));
    expect(() => worstCaseReservationMicros(mini, 1_234, 1_000, 0.5)).toThrow(InvalidBillingQuantityError);
  });

  it('reserves the prompt as if nothing were cached, at the higher of the two input prices', () => {
    expect(worstCaseReservationMicros(cachedMini, 1_234, 1_000)).toBe(worstCaseReservationMicros(mini, 1_234, 1_000));
    const odd: ModelPrice = { ...mini, cachedInputPriceMicrosPerMtok: 300_000 };
    // An operator's cached price above the input price: the prompt is reserved at 300,000.
    expect(worstCaseReservationMicros(odd, 1_000, 1)).toBe(Math.ceil((1_000 * 300_000 + 600_000) / 1e6));
    expect(worstCaseReservationMicros(odd, 1_000, 1)).toBeGreaterThanOrEqual(costMicros(odd, { promptTokens: 1_000, completionTokens: 1, cachedPromptTokens: 1_000 }));
  });
});
