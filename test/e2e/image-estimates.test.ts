/**
 * Images in the worst-case reservation (issue 8, item 2; docs/pricing.md), through the whole
 * stack: the gateway reserves an http(s) image at the tile rule's worst case (it never fetches
 * customer URLs), an inline base64 image exactly from its header, a low-detail image at 85;
 * the mock upstream, like a provider, fetches the URL and bills its real size. The reservation
 * covers the bill, and the ledger books what the upstream billed.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Knex } from 'knex';
import { highDetailImageTokens, WORST_CASE_IMAGE_TOKENS } from '../../src/billing/image-tokens';
import { countPromptTokens } from '../../src/billing/token-count';
import { IMAGE_FIXTURES_DIR, startImageServer, type ImageServer } from '../helpers/image-server';
import { chat, startTestApp, TEST_MODEL, TEST_PRICE, type TestApp } from '../helpers/app';
import { settled } from '../helpers/ledger';
import { testDb } from '../helpers/services';

const TEXT = 'compare these pictures [mock:tokens=5]';
const COMPLETION_TOKENS = 5;
/** TEST_PRICE: 1 micro per prompt token, 2 per completion token; the reservation covers the model's output cap. */
const reservedFor = (promptTokens: number): number => promptTokens + 2 * TEST_PRICE.max_output_tokens;

let db: Knex;
let images: ImageServer;
beforeAll(async () => {
  db = testDb();
  images = await startImageServer();
});
afterAll(async () => {
  await images?.close();
  await db?.destroy();
});

function imageRequest() {
  const inlineJpeg = fs.readFileSync(path.join(IMAGE_FIXTURES_DIR, 'square-1024.jpg')).toString('base64');
  return {
    model: TEST_MODEL,
    messages: [{
      role: 'user',
      content: [
        { type: 'text', text: TEXT },
        { type: 'image_url', image_url: { url: images.url('high-2048x4096.png') } },
        { type: 'image_url', image_url: { url: `data:image/jpeg;base64,${inlineJpeg}`, detail: 'high' } },
        { type: 'image_url', image_url: { url: images.url('progressive-1000x3000.jpg'), detail: 'low' } },
      ],
    }],
  };
}

/** The prompt without its images: what the rule adds comes on top. */
const textTokens = countPromptTokens([{ role: 'user', content: [{ type: 'text', text: TEXT }] }], TEST_MODEL);

interface UsageRow { reserved_micros: string; amount_micros: string; prompt_tokens: number; token_source: string }

async function usageRow(tenantId: string): Promise<UsageRow> {
  await settled(db, tenantId);
  const rows: UsageRow[] = await db('billing_transaction').where({ tenant_id: tenantId, kind: 'usage', status: 'committed' }).select('reserved_micros', 'amount_micros', 'prompt_tokens', 'token_source');
  expect(rows).toHaveLength(1);
  return rows[0]!;
}

describe('images in the reservation', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startTestApp();
  }, 60_000);
  afterAll(async () => {
    await app?.stop();
  });

  it('reserves the URL image at the worst case, the inline one exactly, low detail at 85; the reservation covers what the upstream bills', async () => {
    const t = await app.tenant();
    const res = await chat(app, t.key, imageRequest());
    expect(res.status).toBe(200);

    const estimate = textTokens + WORST_CASE_IMAGE_TOKENS + highDetailImageTokens({ width: 1024, height: 1024 }) + 85;
    // The upstream fetched the URL image and billed its real 2048 x 4096 (1105 tokens), not the worst case.
    const billedPrompt = textTokens + highDetailImageTokens({ width: 2048, height: 4096 }) + 765 + 85;
    expect(images.hits.get('high-2048x4096.png')).toBe(1);
    const row = await usageRow(t.tenantId);
    expect(row.token_source).toBe('upstream');
    expect(row.prompt_tokens).toBe(billedPrompt);
    expect(Number(row.reserved_micros)).toBe(reservedFor(estimate));
    expect(Number(row.amount_micros)).toBe(billedPrompt + 2 * COMPLETION_TOKENS);
    expect(Number(row.reserved_micros)).toBeGreaterThanOrEqual(Number(row.amount_micros));
    // And the prompt alone: reserved for the prompt at least what the upstream counted.
    expect(estimate).toBeGreaterThanOrEqual(billedPrompt);
  }, 60_000);
});

describe('IMAGE_WORST_CASE_TOKENS', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startTestApp({ env: { IMAGE_WORST_CASE_TOKENS: '2000' } });
  }, 60_000);
  afterAll(async () => {
    await app?.stop();
  });

  it('replaces the worst case of an image of unknown size only; measured and low-detail images keep their count', async () => {
    const t = await app.tenant();
    const res = await chat(app, t.key, imageRequest());
    expect(res.status).toBe(200);
    const row = await usageRow(t.tenantId);
    expect(Number(row.reserved_micros)).toBe(reservedFor(textTokens + 2000 + 765 + 85));
    expect(row.prompt_tokens).toBe(textTokens + 1105 + 765 + 85);
  }, 60_000);
});
