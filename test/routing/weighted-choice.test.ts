/** Weighted choice of channels: the first pick follows the weights (seeded, so the test is reproducible). */
import { seededRandom, weightedOrder } from '../../src/routing/weighted-choice';

describe('weightedOrder', () => {
  it('picks first in proportion to weight (60k seeded draws, within 1.5 points)', () => {
    const items = [{ id: 'a', weight: 1 }, { id: 'b', weight: 2 }, { id: 'c', weight: 3 }];
    const random = seededRandom(42);
    const firsts: Record<string, number> = { a: 0, b: 0, c: 0 };
    const draws = 60_000;
    for (let i = 0; i < draws; i++) firsts[weightedOrder(items, random)[0]!.id]! += 1;
    expect(Math.abs(firsts['a']! / draws - 1 / 6)).toBeLessThan(0.015);
    expect(Math.abs(firsts['b']! / draws - 2 / 6)).toBeLessThan(0.015);
    expect(Math.abs(firsts['c']! / draws - 3 / 6)).toBeLessThan(0.015);
  });

  it('returns every item once (the fallbacks are the rest, in weighted order)', () => {
    const items = [{ id: 'a', weight: 5 }, { id: 'b', weight: 1 }, { id: 'c', weight: 1000 }];
    const order = weightedOrder(items, seededRandom(7));
    expect(order.map((i) => i.id).sort()).toEqual(['a', 'b', 'c']);
  });

  it('is reproducible with one seed', () => {
    const items = Array.from({ length: 10 }, (_, i) => ({ id: `c${i}`, weight: i + 1 }));
    expect(weightedOrder(items, seededRandom(3))).toEqual(weightedOrder(items, seededRandom(3)));
  });
});
