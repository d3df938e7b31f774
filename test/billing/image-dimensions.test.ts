/**
 * Image sizes from headers (issue 8, item 2 / the coverage rule): real tiny PNG, JPEG
 * (baseline and progressive with a segment before the frame header), GIF and the three
 * WebP kinds, read from bytes and from base64 without decoding it whole; anything else unknown.
 */
import fs from 'node:fs';
import path from 'node:path';
import { base64Source, bufferSource, imageSizeOf, inlineImageSize } from '../../src/billing/image-dimensions';

const fixture = (name: string): Buffer => fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'images', name));

/** The fixtures (test/fixtures/images, made with ImageMagick and cwebp) and the size each was made at. */
const FIXTURES: ReadonlyArray<[string, string, number, number]> = [
  ['high-2048x4096.png', 'image/png', 2048, 4096],
  ['square-1024.jpg', 'image/jpeg', 1024, 1024],
  ['progressive-1000x3000.jpg', 'image/jpeg', 1000, 3000],
  ['small-300x200.gif', 'image/gif', 300, 200],
  ['lossy-800x600.webp', 'image/webp', 800, 600],
  ['lossless-64x48.webp', 'image/webp', 64, 48],
  ['alpha-1000x500.webp', 'image/webp', 1000, 500],
];

describe('imageSizeOf', () => {
  it.each(FIXTURES)('reads %s (%s) as %ix%i', (name, _type, width, height) => {
    expect(imageSizeOf(bufferSource(fixture(name)))).toEqual({ width, height });
  });

  it('reads the same sizes from base64 text, decoding only the windows it reads', () => {
    for (const [name, , width, height] of FIXTURES) {
      const text = `prefix,${fixture(name).toString('base64')}`;
      expect(imageSizeOf(base64Source(text, 'prefix,'.length))).toEqual({ width, height });
    }
  });

  it('reads a base64 window at any byte offset exactly', () => {
    const bytes = fixture('square-1024.jpg');
    const src = base64Source(bytes.toString('base64'));
    for (const [offset, length] of [[0, 1], [1, 5], [2, 7], [3, 3], [100, 17], [bytes.length - 4, 10]] as const) {
      expect(src.read(offset, length)).toEqual(bytes.subarray(offset, offset + length));
    }
  });

  it('knows nothing of a truncated header, other formats or garbage', () => {
    const png = fixture('high-2048x4096.png');
    const jpeg = fixture('progressive-1000x3000.jpg');
    expect(imageSizeOf(bufferSource(png.subarray(0, 20)))).toBeUndefined();
    // The JPEG cut inside its comment segment, before the frame header.
    expect(imageSizeOf(bufferSource(jpeg.subarray(0, 40)))).toBeUndefined();
    expect(imageSizeOf(bufferSource(Buffer.from('BM6\u0000\u0000\u0000 a bitmap header', 'latin1')))).toBeUndefined();
    expect(imageSizeOf(bufferSource(Buffer.alloc(0)))).toBeUndefined();
    expect(imageSizeOf(bufferSource(Buffer.from('RIFF\u0000\u0000\u0000\u0000WEBPVP9 and more bytes to read', 'latin1')))).toBeUndefined();
  });

  it('ends on a hostile JPEG: fill bytes to the end, a zero-length segment, scan data before any frame', () => {
    expect(imageSizeOf(bufferSource(Buffer.concat([Buffer.from([0xff, 0xd8]), Buffer.alloc(100_000, 0xff)])))).toBeUndefined();
    expect(imageSizeOf(bufferSource(Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x00, 0xff, 0xc0])))).toBeUndefined();
    expect(imageSizeOf(bufferSource(Buffer.from([0xff, 0xd8, 0xff, 0xda, 0x00, 0x08, 1, 2, 3, 4, 5, 6])))).toBeUndefined();
    // A frame header declaring 0 x 0 is no size.
    expect(imageSizeOf(bufferSource(Buffer.from([0xff, 0xd8, 0xff, 0xc0, 0x00, 0x0b, 0x08, 0, 0, 0, 0, 1])))).toBeUndefined();
  });
});

describe('inlineImageSize', () => {
  it('reads a base64 data URL of a PNG and of a JPEG', () => {
    expect(inlineImageSize(`data:image/png;base64,${fixture('high-2048x4096.png').toString('base64')}`)).toEqual({ width: 2048, height: 4096 });
    expect(inlineImageSize(`data:image/jpeg;base64,${fixture('square-1024.jpg').toString('base64')}`)).toEqual({ width: 1024, height: 1024 });
  });

  it('gives no size for an http(s) URL, a non-base64 data URL, base64 with line breaks or random bytes', () => {
    const b64 = fixture('small-300x200.gif').toString('base64');
    expect(inlineImageSize('https://example.com/cat.png')).toBeUndefined();
    expect(inlineImageSize('data:image/svg+xml,<svg width="10" height="10"/>')).toBeUndefined();
    expect(inlineImageSize(`data:image/gif;base64,${b64.slice(0, 4)}\n${b64.slice(4)}`)).toBeUndefined();
    expect(inlineImageSize(`data:image/png;base64,${Buffer.from('not an image at all, just text').toString('base64')}`)).toBeUndefined();
    expect(inlineImageSize('data:,')).toBeUndefined();
  });
});
