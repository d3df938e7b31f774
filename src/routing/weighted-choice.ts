/**
 * Weighted random order of channels (Efraimidis-Spirakis): each channel draws the key
 * u^(1/weight) and the order is by key, highest first. The first channel is then chosen
 * with probability weight / sum of weights, and each later one likewise among the rest,
 * so the fallbacks of a route are a weighted choice too. `random` is injectable (seeded in tests).
 */
export interface Weighted {
  id: string;
  weight: number;
}

export function weightedOrder<T extends Weighted>(items: readonly T[], random: () => number = Math.random): T[] {
  return items
    .map((item) => ({ item, key: Math.pow(random(), 1 / item.weight) }))
    .sort((a, b) => b.key - a.key)
    .map(({ item }) => item);
}

/** A small seeded generator (mulberry32), for reproducible tests and benchmarks. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
