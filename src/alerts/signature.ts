/**
 * The signature of a budget-alert webhook (docs/alerts.md shows a receiver verifying it):
 *
 *   X-Billing-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
 *
 * The key is the tenant's signing secret as shown once (its UTF-8 bytes, prefix included).
 * Signing the timestamp with the body lets a receiver refuse replays: a captured request
 * re-sent later carries an old `t`, and changing `t` breaks the HMAC. Each delivery
 * attempt is signed afresh, so a retry hours later still has a recent timestamp.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'X-Billing-Signature';
export const ALERT_ID_HEADER = 'X-Billing-Alert-Id';
/** Which attempt this POST is (1 first); informational, not signed. */
export const DELIVERY_ATTEMPT_HEADER = 'X-Billing-Delivery-Attempt';

/** The tolerance a receiver should allow between `t` and its own clock. */
export const DEFAULT_SIGNATURE_TOLERANCE_SECONDS = 300;

function hmacHex(secret: string, timestamp: number, rawBody: string): string {
  return createHmac('sha256', secret).update(`${timestamp}.${rawBody}`, 'utf8').digest('hex');
}

/** The X-Billing-Signature value for `rawBody` sent at `timestamp` (unix seconds). */
export function signAlertBody(secret: string, timestamp: number, rawBody: string): string {
  return `t=${timestamp},v1=${hmacHex(secret, timestamp, rawBody)}`;
}

export type SignatureCheck = { valid: true; timestamp: number } | { valid: false; reason: 'malformed' | 'mismatch' | 'stale' };

/**
 * A receiver's check: the header parses, one of its v1 signatures matches the raw body
 * (compared in constant time), and `t` is within `toleranceSeconds` of `nowSeconds`.
 */
export function verifyAlertSignature(
  secret: string,
  header: string | undefined,
  rawBody: string,
  opts: { toleranceSeconds?: number; nowSeconds?: number } = {},
): SignatureCheck {
  if (header === undefined) return { valid: false, reason: 'malformed' };
  let timestamp: number | undefined;
  const signatures: string[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    const name = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (name === 't' && /^[0-9]{1,12}$/.test(value)) timestamp = Number(value);
    else if (name === 'v1' && /^[0-9a-f]{64}$/.test(value)) signatures.push(value);
  }
  if (timestamp === undefined || signatures.length === 0) return { valid: false, reason: 'malformed' };
  const expected = Buffer.from(hmacHex(secret, timestamp, rawBody), 'hex');
  if (!signatures.some((s) => timingSafeEqual(Buffer.from(s, 'hex'), expected))) return { valid: false, reason: 'mismatch' };
  const now = opts.nowSeconds ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - timestamp) > (opts.toleranceSeconds ?? DEFAULT_SIGNATURE_TOLERANCE_SECONDS)) return { valid: false, reason: 'stale' };
  return { valid: true, timestamp };
}
