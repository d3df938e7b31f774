/**
 * AES-256-GCM for the body store (src/db/request-body-repository.ts) with the payload
 * codec's keyring (./keyring.ts): the active key encrypts, any listed key decrypts, so
 * key rotation works as it does for history. Data is iv (12 bytes) + ciphertext + tag
 * (16 bytes); the additional authenticated data binds a row to its request id and kind
 * (a row copied onto another request fails authentication).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { CodecKeyring } from './keyring';
import { PayloadCodecError } from './payload-codec';

const IV_BYTES = 12;
const TAG_BYTES = 16;

export interface SealedBody {
  keyId: string;
  data: Buffer;
}

export function sealBody(keyring: CodecKeyring, plaintext: Buffer, aad: string): SealedBody {
  const key = keyring.keys.get(keyring.activeKeyId);
  if (!key) throw new PayloadCodecError(`the active key "${keyring.activeKeyId}" is not in the key ring`);
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const data = Buffer.concat([iv, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  return { keyId: keyring.activeKeyId, data };
}

export function openBody(keyring: CodecKeyring, sealed: SealedBody, aad: string): Buffer {
  const key = keyring.keys.get(sealed.keyId);
  if (!key) throw new PayloadCodecError(`body encrypted with key id "${sealed.keyId}", which is not among the configured keys: add it to PAYLOAD_CODEC_KEYS`);
  const { data } = sealed;
  if (data.length < IV_BYTES + TAG_BYTES) throw new PayloadCodecError(`stored body (key id "${sealed.keyId}") is too short`);
  const decipher = createDecipheriv('aes-256-gcm', key, data.subarray(0, IV_BYTES));
  decipher.setAAD(Buffer.from(aad, 'utf8'));
  decipher.setAuthTag(data.subarray(data.length - TAG_BYTES));
  try {
    return Buffer.concat([decipher.update(data.subarray(IV_BYTES, data.length - TAG_BYTES)), decipher.final()]);
  } catch {
    throw new PayloadCodecError(`stored body failed authentication with key "${sealed.keyId}"`);
  }
}
