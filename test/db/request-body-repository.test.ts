/**
 * The body store (request_body, issue 8): encrypted rows, a request body written once, an
 * output replaced by a later attempt, reads across a key rotation, rows bound to their
 * request id, idempotent deletes and the expiry sweep.
 */
import type { Knex } from 'knex';
import { randomBytes } from 'node:crypto';
import { FramedPlaintext, openBody, sealBody } from '../../src/codec/body-cipher';
import { keyringOf } from '../../src/codec/keyring';
import { createRequestBodyRepository } from '../../src/db/request-body-repository';
import { testDb, uniqueId } from '../helpers/services';

const KEY_A = Buffer.alloc(32, 0x11).toString('base64');
const KEY_B = Buffer.alloc(32, 0x22).toString('base64');
const ringA = keyringOf({ a: KEY_A }, 'a');
const ringAB = keyringOf({ a: KEY_A, b: KEY_B }, 'b');
const ringB = keyringOf({ b: KEY_B }, 'b');

let db: Knex;
beforeAll(() => {
  db = testDb();
});
afterAll(async () => {
  await db.destroy();
});

const body = (text: string): Buffer => Buffer.from(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: text }] }), 'utf8');

describe('request body repository', () => {
  it('stores the body encrypted (AES-256-GCM under the active key) and reads it back byte for byte', async () => {
    const store = createRequestBodyRepository(db, ringA);
    const requestId = uniqueId('rb');
    const secret = `secret-${uniqueId('s')}`;
    await store.put({ requestId, tenantId: 't1', kind: 'request', body: body(secret) });

    const row = await db('request_body').where({ request_id: requestId, kind: 'request' }).first<{ key_id: string; ciphertext: Buffer; tenant_id: string; expires_at: Date; created_at: Date }>();
    expect(row).toMatchObject({ key_id: 'a', tenant_id: 't1' });
    expect(row.ciphertext.toString('utf8')).not.toContain(secret);
    expect(row.ciphertext.length).toBe(body(secret).length + 12 + 16);
    expect(row.expires_at.getTime()).toBeGreaterThan(row.created_at.getTime());
    expect(await store.get(requestId, 'request')).toEqual(body(secret));
    expect(await store.get(requestId, 'output')).toBeUndefined();
  });

  it('a request body is written once (a duplicate keeps the first); an output is replaced by a later attempt', async () => {
    const store = createRequestBodyRepository(db, ringA);
    const requestId = uniqueId('rb');
    await store.put({ requestId, tenantId: 't1', kind: 'request', body: body('first') });
    await store.put({ requestId, tenantId: 't1', kind: 'request', body: body('second') });
    expect(await store.get(requestId, 'request')).toEqual(body('first'));

    await store.put({ requestId, tenantId: 't1', kind: 'output', body: Buffer.from('attempt 1') });
    await store.put({ requestId, tenantId: 't1', kind: 'output', body: Buffer.from('attempt 2') });
    expect((await store.get(requestId, 'output'))?.toString()).toBe('attempt 2');
    expect(await store.get(requestId, 'request')).toEqual(body('first'));
  });

  it('rotation: rows written under key A read once B is active (A kept); without A the read fails naming the key', async () => {
    const requestId = uniqueId('rb');
    await createRequestBodyRepository(db, ringA).put({ requestId, tenantId: 't1', kind: 'request', body: body('rotated') });
    expect(await createRequestBodyRepository(db, ringAB).get(requestId, 'request')).toEqual(body('rotated'));
    await expect(createRequestBodyRepository(db, ringB).get(requestId, 'request')).rejects.toThrow('key id "a"');

    const newer = uniqueId('rb');
    await createRequestBodyRepository(db, ringAB).put({ requestId: newer, tenantId: 't1', kind: 'request', body: body('new') });
    expect(await db('request_body').where({ request_id: newer }).first('key_id')).toEqual({ key_id: 'b' });
  });

  it('a row copied onto another request fails authentication (the request id and kind are authenticated data)', async () => {
    const store = createRequestBodyRepository(db, ringA);
    const [one, two] = [uniqueId('rb'), uniqueId('rb')];
    await store.put({ requestId: one, tenantId: 't1', kind: 'request', body: body('mine') });
    const row = await db('request_body').where({ request_id: one }).first<{ key_id: string; ciphertext: Buffer }>();
    await db('request_body').insert({ request_id: two, kind: 'request', tenant_id: 't1', key_id: row.key_id, ciphertext: row.ciphertext, expires_at: db.raw(`now() + interval '1 hour'`) });
    await expect(store.get(two, 'request')).rejects.toThrow('failed authentication');
  });

  it('delete is idempotent and per kind; deleteExpired removes only rows past their expiry', async () => {
    const store = createRequestBodyRepository(db, ringA);
    const requestId = uniqueId('rb');
    await store.put({ requestId, tenantId: 't1', kind: 'request', body: body('x') });
    await store.put({ requestId, tenantId: 't1', kind: 'output', body: Buffer.from('y') });
    await store.delete(requestId, 'request');
    await store.delete(requestId, 'request');
    expect(await store.get(requestId, 'request')).toBeUndefined();
    expect(await store.get(requestId, 'output')).toBeDefined();

    const expired = uniqueId('rb');
    await createRequestBodyRepository(db, ringA, { ttlSeconds: 1 }).put({ requestId: expired, tenantId: 't1', kind: 'request', body: body('old') });
    await db('request_body').where({ request_id: expired }).update({ expires_at: db.raw(`now() - interval '1 second'`) });
    expect(await store.deleteExpired()).toBeGreaterThanOrEqual(1);
    expect(await store.get(expired, 'request')).toBeUndefined();
    expect(await store.get(requestId, 'output')).toBeDefined();
    await store.delete(requestId, 'output');
  });

  it('reads a body of several 1 MiB pieces back byte for byte, and seals a framed body in place', async () => {
    const store = createRequestBodyRepository(db, ringA);
    const requestId = uniqueId('rb');
    const large = randomBytes(3 * 1024 * 1024 + 12345);
    const framed = FramedPlaintext.copyOf(large);
    const buffer = framed.buffer;
    await store.put({ requestId, tenantId: 't1', kind: 'request', body: () => framed });
    // Sealed where it was: the framed buffer now holds the stored row, iv to tag.
    const row = await db('request_body').where({ request_id: requestId, kind: 'request' }).first<{ ciphertext: Buffer }>();
    expect(row.ciphertext.equals(buffer)).toBe(true);
    expect(buffer.subarray(12, 12 + 64).equals(large.subarray(0, 64))).toBe(false);
    expect((await store.get(requestId, 'request'))!.equals(large)).toBe(true);
  });
});

describe('body cipher', () => {
  it('opens sealed data given in pieces cut anywhere, the iv and the tag included; a flipped byte fails', () => {
    const plaintext = randomBytes(5000);
    const sealed = sealBody(ringA, plaintext, 'request\nr1');
    const cuts = [[], [5], [12], [13, 40], [100, 4990, 5020], [sealed.data.length - 16], [sealed.data.length - 3]];
    for (const at of cuts) {
      const pieces = [0, ...at, sealed.data.length].slice(1).map((end, i, ends) => sealed.data.subarray(i === 0 ? 0 : ends[i - 1], end));
      expect(openBody(ringA, { keyId: 'a', data: pieces }, 'request\nr1').equals(plaintext)).toBe(true);
    }
    const tampered = Buffer.from(sealed.data);
    tampered[2000] = tampered[2000]! ^ 1;
    expect(() => openBody(ringA, { keyId: 'a', data: [tampered.subarray(0, 7), tampered.subarray(7)] }, 'request\nr1')).toThrow(/failed authentication/);
    // A framed plaintext seals to data the plain path opens.
    const inPlace = sealBody(ringA, FramedPlaintext.copyOf(plaintext), 'request\nr1');
    expect(openBody(ringA, inPlace, 'request\nr1').equals(plaintext)).toBe(true);
  });
});
