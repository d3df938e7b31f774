/**
 * Codec-server operator sessions (issue 8): signed, time-limited cookie values that are not
 * the admin token; expiry, tampering, forgery under another token, and the cookie's attributes.
 */
import { createHmac } from 'node:crypto';
import {
  clearedSessionCookieHeader,
  cookieValue,
  createCodecSessions,
  sessionCookieHeader,
} from '../../src/api/codec-session';

const TOKEN = 'codec-session-test-token-0123456789';

describe('codec sessions', () => {
  let clock = 1_900_000_000;
  const sessions = createCodecSessions({ adminToken: TOKEN, ttlSeconds: 600, now: () => clock });
  beforeEach(() => {
    clock = 1_900_000_000;
  });

  it('issues a value that verifies, carries its expiry, and is neither the token nor derived from it in the clear', () => {
    const { session, value } = sessions.issue();
    expect(session.expiresAt - session.issuedAt).toBe(600);
    expect(sessions.verify(value)).toEqual(session);
    expect(value).not.toContain(TOKEN);
    expect(Buffer.from(value.split('.')[1]!, 'base64url').toString('utf8')).not.toContain(TOKEN);
    // Two sign-ins are two sessions.
    expect(sessions.issue().session.id).not.toBe(session.id);
  });

  it('expires at its signed expiry, not a second later', () => {
    const { value } = sessions.issue();
    clock += 599;
    expect(sessions.verify(value)).toBeDefined();
    clock += 1;
    expect(sessions.verify(value)).toBeUndefined();
  });

  it('refuses any change to the payload or the signature', () => {
    const { value } = sessions.issue();
    const [version, payload, signature] = value.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { exp: number };
    const longer = Buffer.from(JSON.stringify({ ...claims, exp: claims.exp + 86_400 })).toString('base64url');
    const flipped = `${signature.startsWith('A') ? 'B' : 'A'}${signature.slice(1)}`;
    for (const forged of [`${version}.${longer}.${signature}`, `${version}.${payload}.${flipped}`, `${version}.${payload}.`, `v2.${payload}.${signature}`, `${payload}.${signature}`, '', 'x'.repeat(600)]) {
      expect(sessions.verify(forged)).toBeUndefined();
    }
    expect(sessions.verify(undefined)).toBeUndefined();
  });

  it('refuses a session signed under another admin token (rotating ADMIN_TOKEN ends every session)', () => {
    const other = createCodecSessions({ adminToken: `${TOKEN}-rotated`, ttlSeconds: 600, now: () => clock });
    expect(sessions.verify(other.issue().value)).toBeUndefined();
    // Nor is the key the token itself: a value signed with HMAC(token) directly does not verify.
    const payload = Buffer.from(JSON.stringify({ sid: 'A'.repeat(22), iat: clock, exp: clock + 60 })).toString('base64url');
    const naive = createHmac('sha256', TOKEN).update(`v1.${payload}`).digest('base64url');
    expect(sessions.verify(`v1.${payload}.${naive}`)).toBeUndefined();
  });

  it('cuts a lifetime longer than its own setting and refuses sessions issued in the future', () => {
    const generous = createCodecSessions({ adminToken: TOKEN, ttlSeconds: 86_400, now: () => clock });
    expect(sessions.verify(generous.issue().value)).toBeUndefined();
    const ahead = createCodecSessions({ adminToken: TOKEN, ttlSeconds: 600, now: () => clock + 3600 });
    expect(sessions.verify(ahead.issue().value)).toBeUndefined();
  });

  it('writes an HttpOnly, SameSite=Strict, /codec-scoped, time-limited cookie; Secure over HTTPS', () => {
    expect(sessionCookieHeader('v', 600, false)).toBe('bq_codec_session=v; Path=/codec; Max-Age=600; HttpOnly; SameSite=Strict');
    expect(sessionCookieHeader('v', 600, true)).toBe('bq_codec_session=v; Path=/codec; Max-Age=600; HttpOnly; SameSite=Strict; Secure');
    expect(clearedSessionCookieHeader(false)).toBe('bq_codec_session=; Path=/codec; Max-Age=0; HttpOnly; SameSite=Strict');
  });

  it('reads one cookie out of a Cookie header', () => {
    expect(cookieValue('a=1; bq_codec_session=v1.x.y; b=2', 'bq_codec_session')).toBe('v1.x.y');
    expect(cookieValue('xbq_codec_session=1', 'bq_codec_session')).toBeUndefined();
    expect(cookieValue(undefined, 'bq_codec_session')).toBeUndefined();
  });
});
