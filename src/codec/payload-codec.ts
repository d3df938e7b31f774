/**
 * The encrypting payload codec: everything the app's Temporal clients and workers write into
 * history (workflow and activity inputs and results, update arguments and results, failure
 * messages through the failure converter in ./failure-converter.ts) is AES-256-GCM encrypted.
 *
 * An encoded payload has metadata `encoding: binary/encrypted` and `encryption-key-id: <kid>`;
 * its data is iv (12 bytes) + ciphertext + auth tag (16 bytes), where the plaintext is the whole
 * original Payload protobuf (its own metadata included, so nothing about the value shows).
 * Decoding passes payloads without that encoding through untouched (histories written before the
 * codec still replay) and refuses an unknown key id or a failed authentication.
 *
 * Runs outside the workflow sandbox (node:crypto): in the clients, in the worker and in the
 * codec server (src/api/routes/codec.ts).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Payload, PayloadCodec } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { KEY_BYTES, type CodecKeyring } from './keyring';

export const ENCRYPTED_ENCODING = 'binary/encrypted';
export const KEY_ID_METADATA = 'encryption-key-id';
const IV_BYTES = 12;
const TAG_BYTES = 16;

const ProtoPayload = temporal.api.common.v1.Payload;

/** A payload this codec cannot decrypt: unknown key id, failed authentication, or malformed data. */
export class PayloadCodecError extends Error {
  override name = 'PayloadCodecError';
}

function text(bytes: Uint8Array | null | undefined): string | undefined {
  return bytes ? Buffer.from(bytes).toString('utf8') : undefined;
}

/** Whether a payload is one this codec wrote (whatever its key). */
export function isEncryptedPayload(payload: Payload): boolean {
  return text(payload.metadata?.['encoding']) === ENCRYPTED_ENCODING;
}

export class AesGcmPayloadCodec implements PayloadCodec {
  private readonly activeKey: Buffer;

  constructor(private readonly keyring: CodecKeyring) {
    for (const [id, key] of keyring.keys) {
      if (key.length !== KEY_BYTES) throw new PayloadCodecError(`payload codec key "${id}" must be ${KEY_BYTES} bytes, not ${key.length}`);
    }
    const active = keyring.keys.get(keyring.activeKeyId);
    if (!active) throw new PayloadCodecError(`the active payload codec key "${keyring.activeKeyId}" is not in the key ring`);
    this.activeKey = active;
  }

  /** The id of the key new payloads are encrypted with. */
  get activeKeyId(): string {
    return this.keyring.activeKeyId;
  }

  encode(payloads: Payload[]): Promise<Payload[]> {
    return Promise.resolve(payloads.map((payload) => this.encrypt(payload)));
  }

  decode(payloads: Payload[]): Promise<Payload[]> {
    try {
      return Promise.resolve(payloads.map((payload) => this.decrypt(payload)));
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new PayloadCodecError(String(err)));
    }
  }

  private encrypt(payload: Payload): Payload {
    const plaintext = ProtoPayload.encode(payload).finish();
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.activeKey, iv);
    const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return {
      metadata: {
        encoding: Buffer.from(ENCRYPTED_ENCODING, 'utf8'),
        [KEY_ID_METADATA]: Buffer.from(this.keyring.activeKeyId, 'utf8'),
      },
      data: Buffer.concat([iv, ciphertext, cipher.getAuthTag()]),
    };
  }

  private decrypt(payload: Payload): Payload {
    if (!isEncryptedPayload(payload)) return payload;
    const keyId = text(payload.metadata?.[KEY_ID_METADATA]);
    if (keyId === undefined) throw new PayloadCodecError(`an encrypted payload has no ${KEY_ID_METADATA} metadata`);
    const key = this.keyring.keys.get(keyId);
    if (!key) {
      throw new PayloadCodecError(`payload encrypted with key id "${keyId}", which is not among the configured keys (${[...this.keyring.keys.keys()].join(', ')}): add it to PAYLOAD_CODEC_KEYS`);
    }
    const data = Buffer.from(payload.data ?? new Uint8Array());
    if (data.length < IV_BYTES + TAG_BYTES) throw new PayloadCodecError(`encrypted payload (key id "${keyId}") is too short: ${data.length} bytes`);
    const decipher = createDecipheriv('aes-256-gcm', key, data.subarray(0, IV_BYTES));
    decipher.setAuthTag(data.subarray(data.length - TAG_BYTES));
    let plaintext: Buffer;
    try {
      plaintext = Buffer.concat([decipher.update(data.subarray(IV_BYTES, data.length - TAG_BYTES)), decipher.final()]);
    } catch {
      throw new PayloadCodecError(`encrypted payload failed authentication with key "${keyId}": the key is wrong or the payload was altered`);
    }
    return ProtoPayload.decode(plaintext);
  }
}
