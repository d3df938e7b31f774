/**
 * AES-256-GCM for the body store (src/db/request-body-repository.ts) with the payload
 * codec's keyring (./keyring.ts): the active key encrypts, any listed key decrypts, so
 * key rotation works as it does for history. Data is iv (12 bytes) + ciphertext + tag
 * (16 bytes); the additional authenticated data binds a row to its request id and kind
 * (a row copied onto another request fails authentication).
 *
 * Bodies may be 32 MiB, so no step copies a whole body: a {@link FramedPlaintext} (the API
 * reads a request body into one, with room for the iv before it and the tag after it) is
 * sealed in place, CHUNK_BYTES at a time; a plain Buffer is sealed into one buffer of the
 * final size; opening takes the sealed data in the pieces the database returned
 * (src/db/request-body-repository.ts) and decrypts them into one buffer without joining them.
 */
import { createCipheriv, createDecipheriv, randomFillSync } from 'node:crypto';
import type { CodecKeyring } from './keyring';
import { PayloadCodecError } from './payload-codec';

const IV_BYTES = 12;
const TAG_BYTES = 16;

export interface SealedBody {
  keyId: string;
  data: Buffer;
}

const CHUNK_BYTES = 256 * 1024;

/**
 * A buffer holding a plaintext between room for the iv (before) and the tag (after): sealed
 * in place, it becomes the sealed data without a copy. Sealing overwrites the plaintext.
 */
export class FramedPlaintext {
  readonly buffer: Buffer;

  private constructor(buffer: Buffer) {
    this.buffer = buffer;
  }

  /** Room for a plaintext of `length` bytes, to be written at {@link FramedPlaintext.start}. */
  static allocate(length: number): FramedPlaintext {
    return new FramedPlaintext(Buffer.allocUnsafe(IV_BYTES + length + TAG_BYTES));
  }

  /** A framed copy of `plaintext`. */
  static copyOf(plaintext: Buffer): FramedPlaintext {
    const framed = FramedPlaintext.allocate(plaintext.length);
    plaintext.copy(framed.buffer, IV_BYTES);
    return framed;
  }

  /** Where the plaintext starts in {@link buffer}. */
  static readonly start = IV_BYTES;

  /** The plaintext (a view, not a copy). */
  get plaintext(): Buffer {
    return this.buffer.subarray(IV_BYTES, this.buffer.length - TAG_BYTES);
  }
}

export function sealBody(keyring: CodecKeyring, plaintext: Buffer | FramedPlaintext, aad: string): SealedBody {
  const key = keyring.keys.get(keyring.activeKeyId);
  if (!key) throw new PayloadCodecError(`the active key "${keyring.activeKeyId}" is not in the key ring`);
  const input = plaintext instanceof FramedPlaintext ? plaintext.plaintext : plaintext;
  const data = plaintext instanceof FramedPlaintext ? plaintext.buffer : Buffer.allocUnsafe(IV_BYTES + input.length + TAG_BYTES);
  const iv = randomFillSync(data, 0, IV_BYTES).subarray(0, IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  let at = IV_BYTES;
  // GCM is a stream mode: every update returns exactly as many bytes as it was given, so a
  // window's ciphertext lands exactly where its plaintext was (in place for a framed plaintext).
  for (let i = 0; i < input.length; i += CHUNK_BYTES) at += cipher.update(input.subarray(i, i + CHUNK_BYTES)).copy(data, at);
  at += cipher.final().copy(data, at);
  cipher.getAuthTag().copy(data, at);
  return { keyId: keyring.activeKeyId, data };
}

/** Bytes [start, end) of data held in consecutive pieces (a copy, for the small iv and tag). */
function bytesAcross(pieces: readonly Buffer[], start: number, end: number): Buffer {
  const out = Buffer.alloc(end - start);
  let offset = 0;
  for (const piece of pieces) {
    const from = Math.max(start, offset);
    const to = Math.min(end, offset + piece.length);
    if (from < to) piece.copy(out, from - start, from - offset, to - offset);
    offset += piece.length;
  }
  return out;
}

/** The plaintext of sealed data given whole or as consecutive pieces (the rows of a chunked read). */
export function openBody(keyring: CodecKeyring, sealed: { keyId: string; data: Buffer | readonly Buffer[] }, aad: string): Buffer {
  const key = keyring.keys.get(sealed.keyId);
  if (!key) throw new PayloadCodecError(`body encrypted with key id "${sealed.keyId}", which is not among the configured keys: add it to PAYLOAD_CODEC_KEYS`);
  const pieces = Buffer.isBuffer(sealed.data) ? [sealed.data] : sealed.data;
  const total = pieces.reduce((n, p) => n + p.length, 0);
  if (total < IV_BYTES + TAG_BYTES) throw new PayloadCodecError(`stored body (key id "${sealed.keyId}") is too short`);
  const decipher = createDecipheriv('aes-256-gcm', key, bytesAcross(pieces, 0, IV_BYTES));
  decipher.setAAD(Buffer.from(aad, 'utf8'));
  decipher.setAuthTag(bytesAcross(pieces, total - TAG_BYTES, total));
  const plaintext = Buffer.allocUnsafe(total - IV_BYTES - TAG_BYTES);
  let at = 0;
  let offset = 0;
  try {
    for (const piece of pieces) {
      // The ciphertext is [IV_BYTES, total - TAG_BYTES) of the whole; this piece covers [offset, offset + length).
      const from = Math.max(IV_BYTES, offset) - offset;
      const to = Math.min(total - TAG_BYTES, offset + piece.length) - offset;
      for (let i = from; i < to; i += CHUNK_BYTES) at += decipher.update(piece.subarray(i, Math.min(to, i + CHUNK_BYTES))).copy(plaintext, at);
      offset += piece.length;
    }
    at += decipher.final().copy(plaintext, at);
  } catch {
    throw new PayloadCodecError(`stored body failed authentication with key "${sealed.keyId}"`);
  }
  return plaintext;
}
