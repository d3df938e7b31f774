/**
 * The codec server for the Temporal Web UI and CLI (issue 8): POST /codec/encode and
 * /codec/decode in Temporal's remote codec JSON shape, behind the admin token or an operator
 * session cookie (signed in at /codec/login), with CORS with credentials for the Web UI's
 * origins only (preflight without credentials).
 */
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import { createCodecSessions } from '../../src/api/codec-session';
import { ADMIN_TOKEN, startTestApp, type TestApp } from '../helpers/app';
import { testConfig, testRedis } from '../helpers/services';
import { CacheKeys } from '../../src/redis/cache-keys';
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

  describe('operator sessions for the Web UI', () => {
    const signIn = (token: string) =>
      fetch(`${app.url}/codec/login`, { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token }).toString() });
    /** The session cookie's value from a sign-in answer. */
    const sessionOf = (res: Response): string => {
      const header = res.headers.get('set-cookie') ?? '';
      const value = /^bq_codec_session=([^;]+);/.exec(header)?.[1];
      if (!value) throw new Error(`no session cookie in ${header}`);
      return value;
    };
    const decodeWith = (cookie: string | undefined, origin: string | undefined, extra: Record<string, string> = {}) =>
      fetch(`${app.url}/codec/decode?preserveStorageRefs=true`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'x-namespace': 'default',
          ...(cookie === undefined ? {} : { cookie: `other=1; bq_codec_session=${cookie}` }),
          ...(origin === undefined ? {} : { origin }),
          ...extra,
        },
        body: JSON.stringify({ payloads: [] }),
      });

    it('serves a sign-in form that no page may frame and that is never cached', async () => {
      const res = await fetch(`${app.url}/codec/login`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/html/);
      expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
      expect(res.headers.get('x-frame-options')).toBe('DENY');
      expect(res.headers.get('cache-control')).toBe('no-store');
      const html = await res.text();
      expect(html).toContain('<form method="post" action="login">');
      expect(html).toContain(`${app.url}/codec`);
      expect(html).not.toContain('<script');
    });

    it('refuses a wrong token with no cookie; the admin token gets a signed session cookie that is not the token', async () => {
      const wrong = await signIn('not-the-admin-token');
      expect(wrong.status).toBe(401);
      expect(wrong.headers.get('set-cookie')).toBeNull();
      expect(await wrong.text()).toContain('That is not the admin token.');

      const ok = await signIn(ADMIN_TOKEN);
      expect(ok.status).toBe(303);
      expect(ok.headers.get('location')).toBe('login');
      const header = ok.headers.get('set-cookie')!;
      expect(header).toMatch(/^bq_codec_session=v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+; Path=\/codec; Max-Age=3600; HttpOnly; SameSite=Strict$/);
      expect(header).not.toContain(ADMIN_TOKEN);
      // Behind a TLS-terminating proxy the cookie is Secure.
      const viaTls = await fetch(`${app.url}/codec/login`, { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-proto': 'https' }, body: `token=${ADMIN_TOKEN}` });
      expect(viaTls.headers.get('set-cookie')).toMatch(/; Secure$/);

      const page = await fetch(`${app.url}/codec/login`, { headers: { cookie: `bq_codec_session=${sessionOf(ok)}` } });
      const html = await page.text();
      expect(html).toMatch(/Signed in until <b>\d{4}-\d\d-\d\dT/);
      expect(html).toContain('Include cross-origin credentials');
      // Only the Web UI origins of this host get a link: the SameSite=Strict cookie does not reach another site.
      expect(html).toContain(`<a href="${uiOrigin}/">`);
      expect(html).not.toContain('href="http://localhost:');
    });

    it('decodes with the session from an allowed origin, with CORS credentials; not without an origin, not from another origin', async () => {
      const session = sessionOf(await signIn(ADMIN_TOKEN));
      const ok = await decodeWith(session, uiOrigin);
      expect(ok.status).toBe(200);
      expect(await ok.json()).toEqual({ payloads: [] });
      expect(ok.headers.get('access-control-allow-origin')).toBe(uiOrigin);
      expect(ok.headers.get('access-control-allow-credentials')).toBe('true');

      // A page of another origin, even one the same-site cookie reaches, cannot use the session.
      for (const origin of [undefined, 'http://127.0.0.1:1', 'https://evil.example']) {
        const refused = await decodeWith(session, origin);
        expect(refused.status).toBe(401);
        expect(refused.headers.get('access-control-allow-origin')).toBeNull();
      }
      // A wrong Bearer credential is refused even with a good session beside it.
      expect((await decodeWith(session, uiOrigin, { authorization: 'Bearer wrong-token-0123456789' })).status).toBe(401);
      // No cookie at all.
      expect((await decodeWith(undefined, uiOrigin)).status).toBe(401);
    });

    it('refuses a tampered, a forged and an expired session', async () => {
      const session = sessionOf(await signIn(ADMIN_TOKEN));
      const [version, payload, signature] = session.split('.') as [string, string, string];
      const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, number>;
      const extended = Buffer.from(JSON.stringify({ ...claims, exp: claims['exp']! + 86_400 })).toString('base64url');
      const forgedElsewhere = createCodecSessions({ adminToken: 'some-other-admin-token-0123', ttlSeconds: 3600 }).issue().value;
      // Signed with the right key, but issued two hours ago: past its hour.
      const twoHoursAgo = Math.floor(Date.now() / 1000) - 7200;
      const expired = createCodecSessions({ adminToken: ADMIN_TOKEN, ttlSeconds: 3600, now: () => twoHoursAgo }).issue().value;
      for (const cookie of [`${version}.${extended}.${signature}`, forgedElsewhere, expired, ADMIN_TOKEN]) {
        expect((await decodeWith(cookie, uiOrigin)).status).toBe(401);
      }
      // The same construction, unexpired, passes: the refusals above are for the reasons named.
      const fresh = createCodecSessions({ adminToken: ADMIN_TOKEN, ttlSeconds: 3600 }).issue().value;
      expect((await decodeWith(fresh, uiOrigin)).status).toBe(200);
    });

    it('answers the credentialed preflight of an allowed origin only', async () => {
      const preflight = (origin: string) => fetch(`${app.url}/codec/decode?preserveStorageRefs=true`, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,x-namespace' },
      });
      const ok = await preflight(uiOrigin);
      expect(ok.status).toBe(204);
      expect(ok.headers.get('access-control-allow-origin')).toBe(uiOrigin);
      expect(ok.headers.get('access-control-allow-credentials')).toBe('true');
      expect(ok.headers.get('access-control-allow-methods')).toBe('POST, OPTIONS');
      expect(ok.headers.get('vary')).toContain('Origin');
      const wrong = await preflight('http://127.0.0.1:1');
      expect(wrong.headers.get('access-control-allow-origin')).toBeNull();
      expect(wrong.headers.get('access-control-allow-credentials')).toBeNull();
    });

    it('logout revokes the session: a copy of the cookie kept from before stops working', async () => {
      const session = sessionOf(await signIn(ADMIN_TOKEN));
      expect((await decodeWith(session, uiOrigin)).status).toBe(200);
      const out = await fetch(`${app.url}/codec/logout`, { method: 'POST', redirect: 'manual', headers: { cookie: `bq_codec_session=${session}` } });
      expect(out.status).toBe(303);
      expect(out.headers.get('set-cookie')).toBe('bq_codec_session=; Path=/codec; Max-Age=0; HttpOnly; SameSite=Strict');
      expect((await decodeWith(session, uiOrigin)).status).toBe(401);
      const page = await (await fetch(`${app.url}/codec/login?signed_out=1`, { headers: { cookie: `bq_codec_session=${session}` } })).text();
      expect(page).toContain('Signed out');
      expect(page).not.toContain('Signed in until');

      // The revocation lives in Redis exactly as long as the session would have.
      const redis = await testRedis();
      try {
        const claims = JSON.parse(Buffer.from(session.split('.')[1]!, 'base64url').toString('utf8')) as { sid: string; exp: number };
        const ttl = await redis.ttl(CacheKeys.codecSessionRevoked(claims.sid));
        expect(Math.abs(ttl - (claims.exp - Math.floor(Date.now() / 1000)))).toBeLessThanOrEqual(2);
      } finally {
        redis.disconnect();
      }
      // Another session is untouched.
      expect((await decodeWith(sessionOf(await signIn(ADMIN_TOKEN)), uiOrigin)).status).toBe(200);
    });
  });
});
