/**
 * The codec server for the Temporal Web UI and CLI (issue 8): POST /codec/encode and
 * /codec/decode in Temporal's remote codec JSON shape, behind the admin token, with CORS
 * for the Web UI's origin (preflight without credentials).
 */
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import { ADMIN_TOKEN, startTestApp, type TestApp } from '../helpers/app';
import { testConfig } from '../helpers/services';
import { keyringOf } from '../../src/codec/keyring';
import { AesGcmPayloadCodec } from '../../src/codec/payload-codec';

interface PayloadJson { metadata: Record<string, string>; data: string }

const toJson = (p: Payload): PayloadJson => ({
  metadata: Object.fromEntries(Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v).toString('base64')])),
  data: Buffer.from(p.data ?? new Uint8Array()).toString('base64'),
});
const fromJson = (p: PayloadJson): Payload => ({
  metadata: Object.fromEntries(Object.entries(p.metadata).map(([k, v]) => [k, Buffer.from(v, 'base64')])),
  data: Buffer.from(p.data, 'base64'),
});
const b64 = (s: string): string => Buffer.from(s).toString('base64');

describe('codec server /codec (issue 8)', () => {
  let app: TestApp;
  const uiOrigin = `http://127.0.0.1:${testConfig().EMBEDDED_TEMPORAL_UI_PORT}`;

  beforeAll(async () => {
    app = await startTestApp();
  }, 60_000);
  afterAll(async () => {
    await app?.stop();
  });

  const post = (op: string, body: unknown, headers: Record<string, string> = { authorization: `Bearer ${ADMIN_TOKEN}` }) =>
    fetch(`${app.url}/codec/${op}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-namespace': 'default', ...headers }, body: JSON.stringify(body) });

  it('answers 401 without the admin token, or with a wrong one', async () => {
    const body = { payloads: [toJson(defaultPayloadConverter.toPayload('x'))] };
    for (const headers of [{}, { authorization: 'Bearer not-the-admin-token' }] as Array<Record<string, string>>) {
      for (const op of ['encode', 'decode']) {
        const res = await post(op, body, headers);
        expect(res.status).toBe(401);
        expect(((await res.json()) as { error: { code: string } }).error.code).toBe('invalid_api_key');
      }
    }
  });

  it('encode then decode round-trips, in Temporal\'s JSON shape; what it encodes the app\'s codec decodes', async () => {
    const original = [defaultPayloadConverter.toPayload({ prompt: 'hello codec' }), defaultPayloadConverter.toPayload(7)];
    const encodedRes = await post('encode', { payloads: original.map(toJson) });
    expect(encodedRes.status).toBe(200);
    const encoded = (await encodedRes.json()) as { payloads: PayloadJson[] };
    expect(encoded.payloads).toHaveLength(2);
    expect(encoded.payloads[0]!.metadata).toEqual({ encoding: b64('binary/encrypted'), 'encryption-key-id': b64('dev') });
    expect(Buffer.from(encoded.payloads[0]!.data, 'base64').includes('hello codec')).toBe(false);
    // The workers' codec reads what the codec server wrote, and the other way round.
    const local = new AesGcmPayloadCodec(testConfig().payloadCodecKeys);
    expect(defaultPayloadConverter.fromPayload((await local.decode([fromJson(encoded.payloads[0]!)]))[0]!)).toEqual({ prompt: 'hello codec' });

    const decodedRes = await post('decode', encoded);
    expect(decodedRes.status).toBe(200);
    const decoded = (await decodedRes.json()) as { payloads: PayloadJson[] };
    expect(decoded.payloads.map((p) => defaultPayloadConverter.fromPayload(fromJson(p)))).toEqual([{ prompt: 'hello codec' }, 7]);
    expect(decoded).toEqual({ payloads: original.map(toJson) });
  });

  it('decode passes plain payloads through; refuses a foreign key id with a clear 400', async () => {
    const plain = toJson(defaultPayloadConverter.toPayload('plain'));
    const passed = await post('decode', { payloads: [plain] });
    expect(await passed.json()).toEqual({ payloads: [plain] });

    const foreign = new AesGcmPayloadCodec(keyringOf({ other: Buffer.alloc(32, 9).toString('base64') }, 'other'));
    const [encrypted] = await foreign.encode([defaultPayloadConverter.toPayload('x')]);
    const refused = await post('decode', { payloads: [toJson(encrypted!)] });
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { error: { message: string } }).error.message).toMatch(/key id "other", which is not among the configured keys \(dev\)/);

    const malformed = await post('decode', { payloads: [{ metadata: { encoding: 'not base64!' } }] });
    expect(malformed.status).toBe(400);
  });

  it('answers the CORS preflight of the Web UI origin without credentials', async () => {
    for (const origin of [uiOrigin, `http://localhost:${testConfig().EMBEDDED_TEMPORAL_UI_PORT}`]) {
      const res = await fetch(`${app.url}/codec/decode`, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-namespace, content-type, authorization' },
      });
      expect(res.status).toBe(204);
      expect(res.headers.get('access-control-allow-origin')).toBe(origin);
      expect(res.headers.get('access-control-allow-methods')).toContain('POST');
      expect(res.headers.get('access-control-allow-headers')).toBe('X-Namespace, Content-Type, Authorization');
      expect(res.headers.get('access-control-allow-credentials')).toBe('true');
    }
  });

  it('gives no CORS grant to another origin; a POST from the UI origin carries it, on 401 too', async () => {
    const other = await fetch(`${app.url}/codec/decode`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
    expect(other.status).toBe(204);
    expect(other.headers.get('access-control-allow-origin')).toBeNull();

    const unauthorised = await post('decode', { payloads: [] }, { origin: uiOrigin });
    expect(unauthorised.status).toBe(401);
    expect(unauthorised.headers.get('access-control-allow-origin')).toBe(uiOrigin);
    const ok = await post('decode', { payloads: [] }, { origin: uiOrigin, authorization: `Bearer ${ADMIN_TOKEN}` });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('access-control-allow-origin')).toBe(uiOrigin);
    expect(await ok.json()).toEqual({ payloads: [] });
  });
});
