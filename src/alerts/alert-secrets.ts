/**
 * Each tenant's webhook signing secret: generated when the tenant (or one of its keys)
 * first gets a webhook URL, or when an admin rotates it; shown once, in the answer that
 * created it; stored only encrypted (AES-256-GCM under the payload codec's keys,
 * src/codec/body-cipher.ts, bound to the tenant id), in tenant_quota. Only the delivery
 * activity reads it back, to sign. Never logged, never returned by a GET.
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { openBody, sealBody } from '../codec/body-cipher';
import type { CodecKeyring } from '../codec/keyring';

/** Every secret starts with this, so a leaked one is easy to recognise. */
export const ALERT_SECRET_PREFIX = 'whsec_';

/** A new secret: 256 random bits, base64url. */
export function generateAlertSecret(): string {
  return `${ALERT_SECRET_PREFIX}${randomBytes(32).toString('base64url')}`;
}

// The additional authenticated data: a secret copied onto another tenant's row fails to open.
const aad = (tenantId: string): string => `alert-secret\n${tenantId}`;

interface SecretRow {
  alert_secret_key_id: string | null;
  alert_secret_ciphertext: Buffer | null;
}

export function createAlertSecretRepository(db: Knex, keyring: CodecKeyring) {
  function sealed(tenantId: string, secret: string): { alert_secret_key_id: string; alert_secret_ciphertext: Buffer } {
    const { keyId, data } = sealBody(keyring, Buffer.from(secret, 'utf8'), aad(tenantId));
    return { alert_secret_key_id: keyId, alert_secret_ciphertext: data };
  }

  return {
    /**
     * Gives the tenant a secret unless it has one; the new secret when this call created
     * it (to show once), else null. Concurrent calls create one: the UPDATE only matches a
     * row without a secret.
     */
    async ensure(tenantId: string, trx?: Knex.Transaction): Promise<string | null> {
      const secret = generateAlertSecret();
      const rows = await (trx ?? db)('tenant_quota')
        .where({ tenant_id: tenantId })
        .whereNull('alert_secret_ciphertext')
        .update(sealed(tenantId, secret))
        .returning('tenant_id');
      return rows.length > 0 ? secret : null;
    },

    /** Replaces the tenant's secret; the new one, or null when the tenant does not exist. */
    async rotate(tenantId: string, trx?: Knex.Transaction): Promise<string | null> {
      const secret = generateAlertSecret();
      const rows = await (trx ?? db)('tenant_quota').where({ tenant_id: tenantId }).update(sealed(tenantId, secret)).returning('tenant_id');
      return rows.length > 0 ? secret : null;
    },

    /** The plaintext secret (for signing only), or null when the tenant has none. */
    async read(tenantId: string): Promise<string | null> {
      const row = await db<SecretRow & { tenant_id: string }>('tenant_quota')
        .where({ tenant_id: tenantId })
        .first('alert_secret_key_id', 'alert_secret_ciphertext');
      if (!row?.alert_secret_key_id || !row.alert_secret_ciphertext) return null;
      return openBody(keyring, { keyId: row.alert_secret_key_id, data: row.alert_secret_ciphertext }, aad(tenantId)).toString('utf8');
    },
  };
}

export type AlertSecretRepository = ReturnType<typeof createAlertSecretRepository>;
