/**
 * The budget-alert webhook signature (docs/alerts.md): X-Billing-Signature
 * `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`, checked by a receiver
 * against the raw body, its secret and a tolerance window against replays. Pure code.
 */
import crypto, { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { generateAlertSecret } from '../../src/alerts/alert-secrets';
import { signAlertBody, verifyAlertSignature } from '../../src/alerts/signature';

const secret = generateAlertSecret();
const body = '{"id":"budget-alert:tenant:acme:80:1","threshold_percent":80,"used_micros":80000}';
const t = 1_767_225_600; // 2026-01-01T00:00:00Z

describe('signAlertBody', () => {
  it('is HMAC-SHA256 over "<t>.<raw body>" with the secret, hex, after t=', () => {
    const expected = createHmac('sha256', secret).update(`${t}.${body}`).digest('hex');
    expect(signAlertBody(secret, t, body)).toBe(`t=${t},v1=${expected}`);
  });

  it('differs for another timestamp, body or secret', () => {
    const base = signAlertBody(secret, t, body);
    expect(new Set([base, signAlertBody(secret, t + 1, body), signAlertBody(secret, t, `${body} `), signAlertBody(generateAlertSecret(), t, body)]).size).toBe(4);
  });
});

describe('verifyAlertSignature', () => {
  const header = signAlertBody(secret, t, body);

  it('accepts the signature within the tolerance window', () => {
    expect(verifyAlertSignature(secret, header, body, { nowSeconds: t + 299 })).toEqual({ valid: true, timestamp: t });
    expect(verifyAlertSignature(secret, header, body, { nowSeconds: t - 299 })).toEqual({ valid: true, timestamp: t });
  });

  it('refuses a replay outside the window (stale), also when the HMAC is right', () => {
    expect(verifyAlertSignature(secret, header, body, { nowSeconds: t + 301 })).toEqual({ valid: false, reason: 'stale' });
    expect(verifyAlertSignature(secret, header, body, { nowSeconds: t + 3600, toleranceSeconds: 3599 })).toEqual({ valid: false, reason: 'stale' });
  });

  it('refuses a changed body, another secret, or a timestamp changed to look fresh', () => {
    expect(verifyAlertSignature(secret, header, body.replace('80000', '1'), { nowSeconds: t })).toEqual({ valid: false, reason: 'mismatch' });
    expect(verifyAlertSignature(generateAlertSecret(), header, body, { nowSeconds: t })).toEqual({ valid: false, reason: 'mismatch' });
    const refreshed = header.replace(`t=${t}`, `t=${t + 3600}`);
    expect(verifyAlertSignature(secret, refreshed, body, { nowSeconds: t + 3600 })).toEqual({ valid: false, reason: 'mismatch' });
  });

  it('accepts any one of several v1 signatures (e.g. during a rotation) and ignores unknown schemes', () => {
    const other = signAlertBody(generateAlertSecret(), t, body).split(',')[1]!;
    const combined = `${header.split(',')[0]!},${other},v0=deadbeef,${header.split(',')[1]!}`;
    expect(verifyAlertSignature(secret, combined, body, { nowSeconds: t })).toEqual({ valid: true, timestamp: t });
  });

  it.each([
    ['no header', undefined],
    ['an empty header', ''],
    ['no timestamp', header.split(',')[1]!],
    ['no signature', `t=${t}`],
    ['a signature of the wrong length', `t=${t},v1=abcd`],
    ['a non-numeric timestamp', header.replace(`t=${t}`, 't=soon')],
  ])('refuses %s as malformed', (_label, value) => {
    expect(verifyAlertSignature(secret, value, body, { nowSeconds: t })).toEqual({ valid: false, reason: 'malformed' });
  });
});

describe('the receiver example of docs/alerts.md', () => {
  // The Node.js snippet operators copy, evaluated as written: it must accept what the service signs.
  const doc = readFileSync(path.join(__dirname, '../../docs/alerts.md'), 'utf8');
  const start = doc.indexOf('function verify(secret, header, rawBody');
  const snippet = doc.slice(start, doc.indexOf('// express:', start));
  const verify = vm.runInNewContext(`${snippet}; verify`, { crypto, Buffer, Date, Number, Math }) as (secret: string, header: string, rawBody: string, tolerance?: number) => boolean;

  it('accepts a fresh signature of the service, and refuses a stale one, another secret or a changed body', () => {
    const now = Math.floor(Date.now() / 1000);
    expect(start).toBeGreaterThan(0);
    expect(verify(secret, signAlertBody(secret, now, body), body)).toBe(true);
    expect(verify(secret, signAlertBody(secret, now - 600, body), body)).toBe(false);
    expect(verify(generateAlertSecret(), signAlertBody(secret, now, body), body)).toBe(false);
    expect(verify(secret, signAlertBody(secret, now, body), `${body} `)).toBe(false);
  });
});
