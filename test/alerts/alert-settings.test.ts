/** Threshold arithmetic of budget alerts: exact integers (BigInt), never floats. Pure code. */
import { thresholdsReached } from '../../src/alerts/alert-settings';

describe('thresholdsReached', () => {
  it('a threshold is reached at used * 100 >= threshold * limit', () => {
    expect(thresholdsReached(79_999, 100_000, [80, 100])).toEqual([]);
    expect(thresholdsReached(80_000, 100_000, [80, 100])).toEqual([80]);
    expect(thresholdsReached(100_000, 100_000, [80, 100])).toEqual([80, 100]);
    expect(thresholdsReached(250_000, 100_000, [80, 100, 250, 1000])).toEqual([80, 100, 250]);
  });

  it('is exact at the largest limits, where doubles are not', () => {
    const limit = Number.MAX_SAFE_INTEGER; // 80 % of it is 7205759403792792.8 micros
    expect(thresholdsReached(7_205_759_403_792_792, limit, [80])).toEqual([]);
    expect(thresholdsReached(7_205_759_403_792_793, limit, [80])).toEqual([80]);
    // The same comparison in doubles cannot tell them apart:
    expect(7_205_759_403_792_792 * 100 >= 80 * limit).toBe(true);
  });

  it('a zero limit reaches nothing (there is no quota to alert about)', () => {
    expect(thresholdsReached(0, 0, [80, 100])).toEqual([]);
    expect(thresholdsReached(5, 0, [80, 100])).toEqual([]);
  });
});
