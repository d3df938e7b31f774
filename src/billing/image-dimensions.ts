/**
 * The pixel size of an image read from its header, for the image token rule
 * (./image-tokens.ts): PNG, JPEG, GIF and WebP, the formats OpenAI's vision models accept.
 *
 * Only the header is read, through a {@link ByteSource}, so the size of a 20 MB inline image
 * costs a few small reads of its base64 text, never a decoded copy of it. Anything that is
 * not a well-formed header of these formats is `undefined` (the caller then counts the worst
 * case); nothing here throws on hostile input, and every loop is bounded by the data.
 *
 * Formats (offsets in bytes):
 * - PNG: signature, then the IHDR chunk; width and height are big-endian u32 at 16 and 20.
 * - GIF: "GIF87a"/"GIF89a", then the logical screen: width and height little-endian u16 at 6 and 8.
 * - JPEG: SOI (FFD8), then marker segments; the first SOFn (C0-CF except C4 DHT, C8 JPG, CC DAC)
 *   holds height then width, big-endian u16, at 3 and 5 of its payload. EXIF orientation may swap
 *   the displayed sides; the tile rule is symmetric in width and height, so it does not matter.
 * - WebP: "RIFF" size "WEBP", then a VP8 (lossy: 14-bit width and height at 26 and 28),
 *   VP8L (lossless: 14-bit width-1 and height-1 packed after the 0x2F signature at 21) or VP8X
 *   (extended: 24-bit width-1 and height-1 at 24 and 27) chunk.
 */

export interface ImageSize {
  width: number;
  height: number;
}

/** Random access to an image's bytes; `read` returns fewer bytes than asked (or none) past the end or when the data is unreadable. */
export interface ByteSource {
  read(offset: number, length: number): Buffer;
}

export function bufferSource(buf: Buffer): ByteSource {
  return { read: (offset, length) => buf.subarray(offset, offset + length) };
}

const BASE64_CHUNK = /^[A-Za-z0-9+/_-]*={0,2}$/;

/**
 * The bytes of base64 text from `start` on, decoded only where read: byte offset `o` lives in
 * the 4-character group `floor(o / 3)`. Text with anything but base64 characters in a window
 * read (whitespace, say) reads as nothing there, so its size is unknown rather than wrong.
 */
export function base64Source(text: string, start = 0): ByteSource {
  return {
    read(offset, length) {
      if (length <= 0 || offset < 0) return Buffer.alloc(0);
      const firstGroup = Math.floor(offset / 3);
      const lastGroup = Math.ceil((offset + length) / 3);
      const chunk = text.slice(start + firstGroup * 4, start + lastGroup * 4);
      if (!BASE64_CHUNK.test(chunk)) return Buffer.alloc(0);
      const skip = offset - firstGroup * 3;
      return Buffer.from(chunk, 'base64').subarray(skip, skip + length);
    },
  };
}

function exactly(src: ByteSource, offset: number, length: number): Buffer | undefined {
  const bytes = src.read(offset, length);
  return bytes.length === length ? bytes : undefined;
}

const sized = (width: number, height: number): ImageSize | undefined => (width > 0 && height > 0 ? { width, height } : undefined);

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function pngSize(src: ByteSource): ImageSize | undefined {
  const head = exactly(src, 0, 24);
  if (!head || !head.subarray(0, 8).equals(PNG_SIGNATURE) || head.toString('latin1', 12, 16) !== 'IHDR') return undefined;
  return sized(head.readUInt32BE(16), head.readUInt32BE(20));
}

function gifSize(src: ByteSource): ImageSize | undefined {
  const head = exactly(src, 0, 10);
  if (!head || !/^GIF8[79]a$/.test(head.toString('latin1', 0, 6))) return undefined;
  return sized(head.readUInt16LE(6), head.readUInt16LE(8));
}

/** SOFn markers: C0-CF without C4 (DHT), C8 (JPG extension) and CC (DAC). */
const isStartOfFrame = (marker: number): boolean => marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
/** Markers without a length field: TEM and RST0-7 (SOI/EOI do not occur between segments). */
const isStandalone = (marker: number): boolean => marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7);

function jpegSize(src: ByteSource): ImageSize | undefined {
  const soi = exactly(src, 0, 2);
  if (!soi || soi[0] !== 0xff || soi[1] !== 0xd8) return undefined;
  let at = 2;
  // Each step moves forward by at least 2 bytes and reads must succeed, so this ends with the data.
  for (;;) {
    const marker = exactly(src, at, 2);
    if (!marker || marker[0] !== 0xff) return undefined;
    const kind = marker[1]!;
    if (kind === 0xff) {
      at += 1; // fill byte before a marker
      continue;
    }
    if (kind === 0xd9 || kind === 0xda) return undefined; // end of image, or scan data before any frame header
    if (isStandalone(kind)) {
      at += 2;
      continue;
    }
    const lengthBytes = exactly(src, at + 2, 2);
    if (!lengthBytes) return undefined;
    const length = lengthBytes.readUInt16BE(0);
    if (length < 2) return undefined;
    if (isStartOfFrame(kind)) {
      const frame = exactly(src, at + 4, 5);
      return frame ? sized(frame.readUInt16BE(3), frame.readUInt16BE(1)) : undefined;
    }
    at += 2 + length;
  }
}

function webpSize(src: ByteSource): ImageSize | undefined {
  const head = exactly(src, 0, 30);
  if (!head || head.toString('latin1', 0, 4) !== 'RIFF' || head.toString('latin1', 8, 12) !== 'WEBP') return undefined;
  switch (head.toString('latin1', 12, 16)) {
    case 'VP8 ':
      // Key frame start code 9D 01 2A, then 14-bit width and height (2 bits of scale above them).
      if (head[23] !== 0x9d || head[24] !== 0x01 || head[25] !== 0x2a) return undefined;
      return sized(head.readUInt16LE(26) & 0x3fff, head.readUInt16LE(28) & 0x3fff);
    case 'VP8L': {
      if (head[20] !== 0x2f) return undefined;
      const bits = head.readUInt32LE(21);
      return sized((bits & 0x3fff) + 1, ((bits >>> 14) & 0x3fff) + 1);
    }
    case 'VP8X':
      return sized(head.readUIntLE(24, 3) + 1, head.readUIntLE(27, 3) + 1);
    default:
      return undefined;
  }
}

/** The size in the image's header, whatever of the four formats it is; undefined when none matches. */
export function imageSizeOf(src: ByteSource): ImageSize | undefined {
  return pngSize(src) ?? jpegSize(src) ?? gifSize(src) ?? webpSize(src);
}

/**
 * The size of the image inline in a `data:` URL with base64 data (`data:image/png;base64,...`),
 * from its header only; undefined for any other URL (an http(s) image the gateway does not fetch).
 */
export function inlineImageSize(url: string): ImageSize | undefined {
  if (!url.startsWith('data:')) return undefined;
  const comma = url.indexOf(',');
  // The media type and parameters are short; a comma far away is not a data URL we understand.
  if (comma < 0 || comma > 256 || !url.slice(0, comma).toLowerCase().endsWith(';base64')) return undefined;
  return imageSizeOf(base64Source(url, comma + 1));
}
