/**
 * OpenAI's tile rule for images (docs/pricing.md): the guide's own examples, the never-upscaled
 * small image, and the worst case, checked against the rule over a grid of sizes.
 */
import { highDetailImageTokens, imagePartTokens, imageTiles, WORST_CASE_IMAGE_TOKENS } from '../../src/billing/image-tokens';

describe('image tokens by the tile rule', () => {
  it('matches the examples of OpenAI\'s vision guide', () => {
    // 1024 x 1024 high: no fit needed, scaled to 768 x 768, 4 tiles: 85 + 4 x 170.
    expect(highDetailImageTokens({ width: 1024, height: 1024 })).toBe(765);
    // 2048 x 4096 high: fit to 1024 x 2048, then 768 x 1536, 6 tiles.
    expect(highDetailImageTokens({ width: 2048, height: 4096 })).toBe(1105);
    // Any size at low detail.
    expect(imagePartTokens('low', { width: 4096, height: 8192 })).toBe(85);
  });

  it('never scales an image up; auto and absent detail count as high', () => {
    expect(imageTiles({ width: 300, height: 200 })).toBe(1);
    expect(imagePartTokens(undefined, { width: 300, height: 200 })).toBe(255);
    expect(imagePartTokens('auto', { width: 300, height: 200 })).toBe(255);
    expect(imagePartTokens('high', { width: 513, height: 512 })).toBe(85 + 2 * 170);
  });

  it('keeps scaled sides exact: a side just over a tile boundary after scaling takes the next tile', () => {
    // 1000 x 3000: the fit to 2048 comes first (682.67 x 2048), after which the short side is below 768: 2 x 4 tiles.
    expect(imageTiles({ width: 1000, height: 3000 })).toBe(8);
    // 800 x 1540: short side to 768 -> long 1478.4, 2.89 tiles -> 3; 2 x 3.
    expect(imageTiles({ width: 800, height: 1540 })).toBe(6);
  });

  it('computes the worst case as the most the rule charges for any size, and reaches it', () => {
    expect(WORST_CASE_IMAGE_TOKENS).toBe(85 + 8 * 170);
    let most = 0;
    for (let w = 16; w <= 8192; w += 61) {
      for (let h = 16; h <= 8192; h += 67) most = Math.max(most, highDetailImageTokens({ width: w, height: h }));
    }
    expect(most).toBe(WORST_CASE_IMAGE_TOKENS);
    expect(highDetailImageTokens({ width: 768, height: 2048 })).toBe(WORST_CASE_IMAGE_TOKENS);
    // Unknown size: the worst case, or the configured IMAGE_WORST_CASE_TOKENS; low detail stays 85.
    expect(imagePartTokens('high', undefined)).toBe(1445);
    expect(imagePartTokens('auto', undefined, 2000)).toBe(2000);
    expect(imagePartTokens('low', undefined, 2000)).toBe(85);
  });
});
