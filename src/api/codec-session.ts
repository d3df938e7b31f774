/**
 * Operator sessions of the codec server, for the Temporal Web UI (issue 8).
 *
 * The Web UI cannot send the admin token: it sends an OIDC access token or nothing, but it
 * can send the browser's cookies ("include cross-origin credentials"). So an operator signs
 * in once at `/codec/login` with the admin token and gets this session cookie instead:
 *
 * - the value is `v1.<payload>.<signature>`: a payload of session id, issue and expiry time
 *   (base64url JSON) and its HMAC-SHA256. It is not the admin token and reveals nothing of it;
 * - the HMAC key is derived from ADMIN_TOKEN (HKDF-SHA256), so every API process verifies
 *   every other's sessions without a new secret to distribute, and rotating ADMIN_TOKEN ends
 *   every session at once;
 * - it expires after CODEC_SESSION_TTL_SECONDS (the signed expiry, whatever the browser does);
 * - logging out revokes the session id in Redis until its expiry, so a copy of the cookie
 *   taken before the logout stops working too. While Redis is unreachable no session is
 *   accepted (fail closed); the admin token as a Bearer credential still works.
 *
 * The cookie is HttpOnly (no script reads it), SameSite=Strict (a cross-site page cannot make
 * the browser send it; the Web UI must be served from the same site as the codec server, e.g.
 * both on 127.0.0.1 or both under one domain), Path=/codec (not sent to other paths of the host,
 * such as the Web UI on another port of it), and Secure when the login page came over HTTPS.
 */
import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from '../redis/client';
import { CacheKeys } from '../redis/cache-keys';

export const CODEC_SESSION_COOKIE = 'bq_codec_session';
/** The cookie's path: the codec server's routes, nothing else on the host. */
export const CODEC_SESSION_COOKIE_PATH = '/codec';

const VERSION = 'v1';
const HKDF_SALT = 'durable-billing codec session';
const HKDF_INFO = 'hmac-sha256 v1';
/** Clock skew tolerated between API processes for a session's issue time. */
const MAX_CLOCK_SKEW_SECONDS = 60;

/** One signed-in operator session (times in Unix seconds). */
export interface CodecSession {
  id: string;
  issuedAt: number;
  expiresAt: number;
}

export interface CodecSessionsOptions {
  adminToken: string;
  /** CODEC_SESSION_TTL_SECONDS. */
  ttlSeconds: number;
  /** Unix seconds; tests move it. @default the wall clock */
  now?: () => number;
}

const b64url = (buf: Buffer): string => buf.toString('base64url');

function isSession(value: unknown): value is { sid: string; iat: number; exp: number } {
  if (typeof value !== 'object' || value === null) return false;
  const { sid, iat, exp } = value as Record<string, unknown>;
  return typeof sid === 'string' && /^[A-Za-z0-9_-]{22}$/.test(sid) && Number.isSafeInteger(iat) && Number.isSafeInteger(exp);
}

/** Issues and verifies session cookie values; stateless (revocation is {@link createCodecSessionRevocations}). */
export function createCodecSessions(opts: CodecSessionsOptions) {
  if (opts.adminToken.length === 0) throw new Error('codec sessions need a non-empty admin token');
  if (!Number.isSafeInteger(opts.ttlSeconds) || opts.ttlSeconds <= 0) throw new Error('codec sessions need a positive integer ttl');
  const key = Buffer.from(hkdfSync('sha256', opts.adminToken, HKDF_SALT, HKDF_INFO, 32));
  const now = opts.now ?? ((): number => Math.floor(Date.now() / 1000));
  const sign = (payload: string): Buffer => createHmac('sha256', key).update(`${VERSION}.${payload}`).digest();

  return {
    ttlSeconds: opts.ttlSeconds,

    /** A new session and its cookie value. */
    issue(): { session: CodecSession; value: string } {
      const issuedAt = now();
      const session: CodecSession = { id: b64url(randomBytes(16)), issuedAt, expiresAt: issuedAt + opts.ttlSeconds };
      const payload = b64url(Buffer.from(JSON.stringify({ sid: session.id, iat: session.issuedAt, exp: session.expiresAt }), 'utf8'));
      return { session, value: `${VERSION}.${payload}.${b64url(sign(payload))}` };
    },

    /** The session a cookie value carries, or undefined when it is malformed, forged, tampered with or expired. */
    verify(value: string | undefined): CodecSession | undefined {
      if (value === undefined || value.length > 512) return undefined;
      const parts = value.split('.');
      if (parts.length !== 3 || parts[0] !== VERSION) return undefined;
      const [, payload = '', signature = ''] = parts;
      const presented = Buffer.from(signature, 'base64url');
      const expected = sign(payload);
      // Equal lengths first (timingSafeEqual requires it); the length of an HMAC is no secret.
      if (presented.length !== expected.length || !timingSafeEqual(presented, expected)) return undefined;
      let claims: unknown;
      try {
        claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
      } catch {
        return undefined;
      }
      if (!isSession(claims)) return undefined;
      const t = now();
      // A lifetime longer than this process allows (a session signed under another setting) is cut to ours.
      if (claims.exp <= t || claims.iat > t + MAX_CLOCK_SKEW_SECONDS || claims.exp - claims.iat > opts.ttlSeconds) return undefined;
      return { id: claims.sid, issuedAt: claims.iat, expiresAt: claims.exp };
    },
  };
}

export type CodecSessions = ReturnType<typeof createCodecSessions>;

/** Sessions ended by a logout before their expiry, in Redis, for as long as they would have lived. */
export function createCodecSessionRevocations(redis: Pick<Redis, 'set' | 'exists'>, now: () => number = () => Math.floor(Date.now() / 1000)) {
  return {
    async revoke(session: CodecSession): Promise<void> {
      const ttl = session.expiresAt - now();
      if (ttl > 0) await redis.set(CacheKeys.codecSessionRevoked(session.id), '1', 'EX', ttl);
    },
    /** Throws when Redis cannot answer: the caller refuses the session (fail closed). */
    async isRevoked(session: CodecSession): Promise<boolean> {
      return (await redis.exists(CacheKeys.codecSessionRevoked(session.id))) === 1;
    },
  };
}

export type CodecSessionRevocations = ReturnType<typeof createCodecSessionRevocations>;

/** The value of one cookie in a `Cookie` header, or undefined. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const pair of header.split(';')) {
    const eq = pair.indexOf('=');
    if (eq > 0 && pair.slice(0, eq).trim() === name) return pair.slice(eq + 1).trim();
  }
  return undefined;
}

/** The Set-Cookie header of a session; `secure` when the browser reached us over HTTPS. */
export function sessionCookieHeader(value: string, maxAgeSeconds: number, secure: boolean): string {
  return [
    `${CODEC_SESSION_COOKIE}=${value}`,
    `Path=${CODEC_SESSION_COOKIE_PATH}`,
    `Max-Age=${maxAgeSeconds}`,
    'HttpOnly',
    'SameSite=Strict',
    ...(secure ? ['Secure'] : []),
  ].join('; ');
}

/** The Set-Cookie header that removes the session cookie. */
export function clearedSessionCookieHeader(secure: boolean): string {
  return sessionCookieHeader('', 0, secure);
}
