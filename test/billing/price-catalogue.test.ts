/**
 * The price catalogue (issue 11): the shipped file is valid and priced in integer micros;
 * applying it is idempotent, a newer version updates catalogue prices, an older one changes
 * nothing, and an operator's price is never overwritten. Against the real PostgreSQL; the
 * fixture catalogues use model names of their own, so the shared price list is not disturbed.
 */
import type { Knex } from 'knex';
import { applyPriceCatalogue, parsePriceCatalogue, priceCatalogueSchema, type PriceCatalogue } from '../../src/billing/catalogue/price-catalogue';
import catalogueFile from '../../src/billing/catalogue/prices.json';
import { createModelPriceRepository, type CataloguePrice } from '../../src/db/model-price-repository';
import { testDb, uniqueId } from '../helpers/services';

let db: Knex;
beforeAll(() => {
  db = testDb();
});
afterAll(async () => {
  await db?.destroy();
});

const entry = (model: string, input: number, over: Partial<CataloguePrice> = {}): CataloguePrice => ({
  model,
  inputPriceMicrosPerMtok: input,
  cachedInputPriceMicrosPerMtok: Math.floor(input / 10),
  outputPriceMicrosPerMtok: 4 * input,
  maxOutputTokens: 4_096,
  pricedOn: '2025-10-01',
  sourceUrl: 'https://example.com/pricing',
  ...over,
});

describe('the shipped catalogue file', () => {
  it('is valid: every provider present, integer micros, cached never above input, dated and sourced', () => {
    const catalogue = parsePriceCatalogue();
    expect(catalogue.version).toBeGreaterThanOrEqual(1);
    const providers = new Set(catalogueFile.models.map((m) => m.provider));
    for (const provider of ['openai', 'anthropic', 'google', 'mistral', 'deepseek']) expect(providers).toContain(provider);
    for (const price of catalogue.prices) {
      expect(Number.isSafeInteger(price.inputPriceMicrosPerMtok) && price.inputPriceMicrosPerMtok > 0).toBe(true);
      expect(price.cachedInputPriceMicrosPerMtok).toBeLessThanOrEqual(price.inputPriceMicrosPerMtok);
      expect(price.sourceUrl).toMatch(/^https:\/\//);
      expect(price.pricedOn).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    }
    // gpt-4o-mini at $0.15 / $0.075 / $0.60 per Mtok, in micros.
    expect(catalogue.prices.find((p) => p.model === 'gpt-4o-mini')).toMatchObject({ inputPriceMicrosPerMtok: 150_000, cachedInputPriceMicrosPerMtok: 75_000, outputPriceMicrosPerMtok: 600_000 });
  });

  it('refuses a file with a float price, a free model, a cached price above input, a duplicate or no source', () => {
    const good = catalogueFile.models[0]!;
    const bad = (patch: Record<string, unknown>) => ({ ...catalogueFile, models: [{ ...good, ...patch }] });
    expect(priceCatalogueSchema.safeParse(bad({ input_price_micros_per_mtok: 2.5 })).success).toBe(false);
    expect(priceCatalogueSchema.safeParse(bad({ input_price_micros_per_mtok: 0 })).success).toBe(false);
    expect(priceCatalogueSchema.safeParse(bad({ cached_input_price_micros_per_mtok: good.input_price_micros_per_mtok + 1 })).success).toBe(false);
    expect(priceCatalogueSchema.safeParse(bad({ source_url: 'http://insecure.example' })).success).toBe(false);
    expect(priceCatalogueSchema.safeParse(bad({ priced_on: '2025-13-45' })).success).toBe(false);
    expect(priceCatalogueSchema.safeParse({ ...catalogueFile, models: [good, good] }).success).toBe(false);
    expect(priceCatalogueSchema.safeParse(catalogueFile).success).toBe(true);
  });
});

describe('applyPriceCatalogue', () => {
  it('loads new models once: a second load of the same version writes nothing', async () => {
    const repo = createModelPriceRepository(db);
    const a = uniqueId('cat-a');
    const b = uniqueId('cat-b');
    const v1: PriceCatalogue = { version: 1, prices: [entry(a, 1_000_000), entry(b, 3_000_000)] };

    expect(await applyPriceCatalogue(repo, v1)).toEqual({ version: 1, written: [a, b].sort(), kept: [] });
    expect(await repo.find(a)).toMatchObject({
      inputPriceMicrosPerMtok: 1_000_000, cachedInputPriceMicrosPerMtok: 100_000, outputPriceMicrosPerMtok: 4_000_000, maxOutputTokens: 4_096,
      source: 'catalogue', catalogue: { version: 1, pricedOn: '2025-10-01', sourceUrl: 'https://example.com/pricing' },
    });
    const before = await repo.find(b);
    expect(await applyPriceCatalogue(repo, v1)).toEqual({ version: 1, written: [], kept: [a, b].sort() });
    expect((await repo.find(b))!.updatedAt).toEqual(before!.updatedAt);
  });

  it('a newer version updates catalogue prices; an older one never rolls them back', async () => {
    const repo = createModelPriceRepository(db);
    const model = uniqueId('cat-up');
    await applyPriceCatalogue(repo, { version: 3, prices: [entry(model, 1_000_000)] });

    const v4 = await applyPriceCatalogue(repo, { version: 4, prices: [entry(model, 800_000, { pricedOn: '2026-01-15', sourceUrl: 'https://example.com/new' })] });
    expect(v4.written).toEqual([model]);
    expect(await repo.find(model)).toMatchObject({ inputPriceMicrosPerMtok: 800_000, outputPriceMicrosPerMtok: 3_200_000, catalogue: { version: 4, pricedOn: '2026-01-15', sourceUrl: 'https://example.com/new' } });

    // A process still running the older file (a rolling deploy) changes nothing.
    expect((await applyPriceCatalogue(repo, { version: 3, prices: [entry(model, 1_000_000)] })).kept).toEqual([model]);
    expect((await repo.find(model))!.inputPriceMicrosPerMtok).toBe(800_000);
  });

  it('never overwrites an operator\'s price, whatever the version; an operator may take over a catalogue price', async () => {
    const repo = createModelPriceRepository(db);
    const mine = uniqueId('cat-op');
    const taken = uniqueId('cat-taken');
    await repo.upsert({ model: mine, inputPriceMicrosPerMtok: 7, outputPriceMicrosPerMtok: 9, maxOutputTokens: 100 });
    await applyPriceCatalogue(repo, { version: 1, prices: [entry(taken, 1_000_000)] });
    await repo.upsert({ model: taken, inputPriceMicrosPerMtok: 5, cachedInputPriceMicrosPerMtok: 1, outputPriceMicrosPerMtok: 6, maxOutputTokens: 50 });

    const applied = await applyPriceCatalogue(repo, { version: 99, prices: [entry(mine, 1_000_000), entry(taken, 1_000_000)] });
    expect(applied.written).toEqual([]);
    expect(applied.kept).toEqual([mine, taken].sort());
    expect(await repo.find(mine)).toMatchObject({ inputPriceMicrosPerMtok: 7, cachedInputPriceMicrosPerMtok: 7, outputPriceMicrosPerMtok: 9, maxOutputTokens: 100, source: 'operator', catalogue: null });
    expect(await repo.find(taken)).toMatchObject({ inputPriceMicrosPerMtok: 5, cachedInputPriceMicrosPerMtok: 1, outputPriceMicrosPerMtok: 6, source: 'operator', catalogue: null });
  });

  it('concurrent loads (every process at start) write each model once and agree', async () => {
    const repo = createModelPriceRepository(db);
    const models = Array.from({ length: 5 }, () => uniqueId('cat-race'));
    const catalogue: PriceCatalogue = { version: 2, prices: models.map((m, i) => entry(m, 1_000 * (i + 1))) };
    const results = await Promise.all(Array.from({ length: 8 }, () => applyPriceCatalogue(repo, catalogue)));
    const writes = results.flatMap((r) => r.written);
    expect(writes.sort()).toEqual([...models].sort());
    const rows = await db('model_price').whereIn('model', models).select('model', 'input_price_micros_per_mtok', 'catalogue_version');
    expect(rows).toHaveLength(5);
    for (const row of rows) expect(row.catalogue_version).toBe(2);
  });
});
