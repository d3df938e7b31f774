/**
 * The encrypting payload codec (issue 8): AES-256-GCM over the whole Payload protobuf,
 * key ids in metadata, plain payloads passed through, unknown keys and tampering refused.
 */
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import { developmentKeyring, keyringOf } from '../../src/codec/keyring';
import { AesGcmPayloadCodec, ENCRYPTED_ENCODING, KEY_ID_METADATA, PayloadCodecError } from '../../src/codec/payload-codec';

const KEY_A = Buffer.alloc(32, 1).toString('base64');
const KEY_B = Buffer.alloc(32, 2).toString('base64');
const MARKER = 'secret prompt marker 7f3a';

const text = (bytes: Uint8Array | null | undefined): string => Buffer.from(bytes ?? new Uint8Array()).toString('utf8');
const plain = (value: unknown): Payload => defaultPayloadConverter.toPayload(value);

describe('AesGcmPayloadCodec (issue 8)', () => {
  const codecA = new AesGcmPayloadCodec(keyringOf({ a: KEY_A }, 'a'));

  it('encrypts the whole payload: binary/encrypted, the key id, iv + ciphertext + tag, no plaintext', async () => {
    const [encoded] = await codecA.encode([plain({ content: MARKER })]);
    expect(text(encoded!.metadata?.encoding)).toBe(ENCRYPTED_ENCODING);
    expect(text(encoded!.metadata?.[KEY_ID_METADATA])).toBe('a');
    expect(Object.keys(encoded!.metadata ?? {}).sort()).toEqual([KEY_ID_METADATA, 'encoding'].sort());
    expect(Buffer.from(encoded!.data!).includes(MARKER)).toBe(false);
    expect(Buffer.from(encoded!.data!).includes('json/plain')).toBe(false);
    // 12-byte iv + ciphertext (at least the JSON) + 16-byte tag
    expect(encoded!.data!.length).toBeGreaterThan(12 + 16 + MARKER.length);
  });

  it('decodes what it encoded, metadata included; a fresh iv each time', async () => {
    const original = [plain({ content: MARKER }), plain(42), plain(undefined)];
    const encoded = await codecA.encode(original);
    const again = await codecA.encode(original);
    expect(Buffer.from(encoded[0]!.data!).equals(Buffer.from(again[0]!.data!))).toBe(false);
    const decoded = await codecA.decode(encoded);
    expect(decoded.map((p) => defaultPayloadConverter.fromPayload(p))).toEqual([{ content: MARKER }, 42, undefined]);
    expect(text(decoded[0]!.metadata?.encoding)).toBe('json/plain');
  });

  it('passes payloads written before the codec through untouched', async () => {
    const old = plain({ content: MARKER });
    expect(await codecA.decode([old])).toEqual([old]);
  });

  it('rotation: a ring with A and B (active B) writes under B and still reads A', async () => {
    const underA = await codecA.encode([plain(MARKER)]);
    const rotated = new AesGcmPayloadCodec(keyringOf({ a: KEY_A, b: KEY_B }, 'b'));
    expect(defaultPayloadConverter.fromPayload((await rotated.decode(underA))[0]!)).toBe(MARKER);
    const [underB] = await rotated.encode([plain(MARKER)]);
    expect(text(underB!.metadata?.[KEY_ID_METADATA])).toBe('b');
  });

  it('refuses an unknown key id with a clear error', async () => {
    const underA = await codecA.encode([plain(MARKER)]);
    const onlyB = new AesGcmPayloadCodec(keyringOf({ b: KEY_B }, 'b'));
    await expect(onlyB.decode(underA)).rejects.toThrow(PayloadCodecError);
    await expect(onlyB.decode(underA)).rejects.toThrow('payload encrypted with key id "a", which is not among the configured keys (b): add it to PAYLOAD_CODEC_KEYS');
  });

  it('refuses a wrong key under the same id, and altered data (failed auth tag)', async () => {
    const [underA] = await codecA.encode([plain(MARKER)]);
    const impostor = new AesGcmPayloadCodec(keyringOf({ a: KEY_B }, 'a'));
    await expect(impostor.decode([underA!])).rejects.toThrow('encrypted payload failed authentication with key "a": the key is wrong or the payload was altered');
    const altered = Buffer.from(underA!.data!);
    altered[20] = altered[20]! ^ 0xff;
    await expect(codecA.decode([{ ...underA!, data: altered }])).rejects.toThrow(/failed authentication/);
    await expect(codecA.decode([{ ...underA!, data: altered.subarray(0, 10) }])).rejects.toThrow(/too short/);
  });

  it('the development key ring encrypts under "dev"', async () => {
    const [encoded] = await new AesGcmPayloadCodec(developmentKeyring()).encode([plain(MARKER)]);
    expect(text(encoded!.metadata?.[KEY_ID_METADATA])).toBe('dev');
  });
});
