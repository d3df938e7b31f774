/**
 * The in-process price list: requests within the TTL cost the database nothing, a
 * price written through it applies at once, an unknown model is remembered too.
 */
import { createPriceList } from '../../src/services/price-list';
import type { StoredModelPrice } from '../../src/db/model-price-repository';

const price = (model: string, input: number): StoredModelPrice => ({
  model, inputPriceMicrosPerMtok: input, cachedInputPriceMicrosPerMtok: input, outputPriceMicrosPerMtok: 2, maxOutputTokens: 10, source: 'operator', catalogue: null, createdAt: new Date(0), updatedAt: new Date(0),
});

describe('createPriceList', () => {
  function fakeRepo() {
    const rows = new Map<string, StoredModelPrice>([['m', price('m', 1)]]);
    return {
      rows,
      find: jest.fn((model: string) => Promise.resolve(rows.get(model) ?? null)),
      upsert: jest.fn((p: { model: string; inputPriceMicrosPerMtok: number }) => {
        const stored = price(p.model, p.inputPriceMicrosPerMtok);
        rows.set(p.model, stored);
        return Promise.resolve(stored);
      }),
    };
  }

  it('reads each model once per TTL, unknown models included, then reads again', async () => {
    let clock = 0;
    const repo = fakeRepo();
    const prices = createPriceList(repo, 1_000, () => clock);
    for (let i = 0; i < 5; i++) {
      expect((await prices.find('m'))?.inputPriceMicrosPerMtok).toBe(1);
      expect(await prices.find('nope')).toBeNull();
    }
    expect(repo.find).toHaveBeenCalledTimes(2);

    repo.rows.set('m', price('m', 7)); // changed by another process
    clock = 999;
    expect((await prices.find('m'))?.inputPriceMicrosPerMtok).toBe(1);
    clock = 1_000;
    expect((await prices.find('m'))?.inputPriceMicrosPerMtok).toBe(7);
    expect(repo.find).toHaveBeenCalledTimes(3);
  });

  it('a price written through it applies to the next request at once', async () => {
    const repo = fakeRepo();
    const prices = createPriceList(repo, 60_000, () => 0);
    expect((await prices.find('m'))?.inputPriceMicrosPerMtok).toBe(1);
    await prices.upsert({ model: 'm', inputPriceMicrosPerMtok: 5, outputPriceMicrosPerMtok: 2, maxOutputTokens: 10 });
    expect((await prices.find('m'))?.inputPriceMicrosPerMtok).toBe(5);
  });
});
