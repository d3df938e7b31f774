/** `npm run migrate`: applies pending migrations to DATABASE_URL. */
import { loadConfig } from '../config';
import { createDb } from './knex';
import { migrateLatest } from './migrate';
import { createModelPriceRepository } from './model-price-repository';
import { applyPriceCatalogue } from '../billing/catalogue/price-catalogue';

async function run(): Promise<void> {
  const config = loadConfig();
  if (!config.DATABASE_URL) throw new Error('set DATABASE_URL (npm start migrates the embedded database by itself)');
  const db = createDb(config.DATABASE_URL);
  try {
    const applied = await migrateLatest(db);
    process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'already up to date\n');
    const catalogue = await applyPriceCatalogue(createModelPriceRepository(db));
    process.stdout.write(`price catalogue v${catalogue.version}: ${catalogue.written.length} written, ${catalogue.kept.length} kept\n`);
  } finally {
    await db.destroy();
  }
}

run().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
