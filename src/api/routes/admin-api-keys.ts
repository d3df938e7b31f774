/**
 * Admin API-key routes: issue a key (shown once), read its budget, revoke it.
 *
 * Revocation is immediate: after the database says "revoked", the key's lookup cache
 * entry is overwritten with a revoked entry. Overwriting (rather than deleting) also
 * closes a race: an authenticator that read the key as active just before the revoke
 * writes its entry with SET NX, which cannot replace the revoked one.
 */
import { randomBytes } from 'node:crypto';
import { Router } from 'express';
import { z } from 'zod';
import { ApiKeyStatus, type ApiKey } from '../../db/api-key-repository';
import { TenantNotFoundError } from '../../db/tenant-repository';
import { readKeyBudget } from '../../redis/quota-cache';
import { writeApiKeyLookup } from '../auth';
import { NotFoundError, ServiceUnavailableError } from '../errors';
import { createApiKeyBodySchema, tenantIdSchema } from '../schemas';
import type { AdminContext } from './admin';

/** Every issued key starts with this, so leaked keys are easy to recognise (and to scan for). */
export const API_KEY_PREFIX = 'sk-bq-';

/** `POST /admin/tenants/:id/api-keys`: the only answer that ever holds the key. */
export interface CreatedApiKeyView {
  id: string;
  key: string;
  tenant_id: string;
  name: string;
  budget_micros: number | null;
  status: ApiKeyStatus;
}

/** `GET /admin/api-keys/:id` */
export interface ApiKeyView {
  id: string;
  tenant_id: string;
  name: string;
  budget_micros: number | null;
  spent_micros: number;
  status: ApiKeyStatus;
}

/** A new key: 256 random bits, base64url. */
export function generateApiKey(): string {
  return `${API_KEY_PREFIX}${randomBytes(32).toString('base64url')}`;
}

/** A new key id: public (it appears in the ledger and in cache keys), so hex only. */
export function generateApiKeyId(): string {
  return `key_${randomBytes(12).toString('hex')}`;
}

const tenantParamsSchema = z.object({ id: tenantIdSchema });
const keyParamsSchema = z.object({ id: z.string().min(1).max(200) });

export function adminApiKeyRoutes(ctx: AdminContext): Router {
  const { redis, logger, apiKeys, billing } = ctx;
  const router = Router();

  async function requireKey(id: string): Promise<ApiKey> {
    const key = await apiKeys.findById(id);
    if (!key) throw new NotFoundError(`API key '${id}'`);
    return key;
  }

  /** Live spend (reservations included) from Redis when cached, else the ledger's. */
  async function spentMicros(key: ApiKey): Promise<number> {
    try {
      const cached = await readKeyBudget(redis, key.tenantId, key.id);
      if (cached) return cached.spentMicros;
    } catch (err) {
      logger.warn({ err, apiKeyId: key.id }, 'API key budget cache unreadable; reporting ledger spend');
    }
    return billing.apiKeyLedgerSpend(key.id);
  }

  router.post('/tenants/:id/api-keys', async (req, res) => {
    const { id: tenantId } = tenantParamsSchema.parse(req.params);
    const body = createApiKeyBodySchema.parse(req.body);
    const key = generateApiKey();
    let stored: ApiKey;
    try {
      stored = await apiKeys.create({ id: generateApiKeyId(), tenantId, name: body.name, key, budgetMicros: body.budget_micros ?? null });
    } catch (err) {
      if (err instanceof TenantNotFoundError) throw new NotFoundError(`Tenant '${tenantId}'`);
      throw err;
    }
    const view: CreatedApiKeyView = {
      id: stored.id,
      key,
      tenant_id: stored.tenantId,
      name: stored.name,
      budget_micros: stored.budgetMicros,
      status: stored.status,
    };
    // The key must not linger in any cache between the gateway and the admin.
    res.status(201).set('Cache-Control', 'no-store').json(view);
  });

  router.get('/api-keys/:id', async (req, res) => {
    const { id } = keyParamsSchema.parse(req.params);
    const key = await requireKey(id);
    const view: ApiKeyView = {
      id: key.id,
      tenant_id: key.tenantId,
      name: key.name,
      budget_micros: key.budgetMicros,
      spent_micros: await spentMicros(key),
      status: key.status,
    };
    res.json(view);
  });

  /** Idempotent: revoking a revoked key answers the same and rewrites the cache entry. */
  router.delete('/api-keys/:id', async (req, res) => {
    const { id } = keyParamsSchema.parse(req.params);
    const revoked = await apiKeys.revoke(id);
    if (!revoked) throw new NotFoundError(`API key '${id}'`);
    try {
      await writeApiKeyLookup(
        redis,
        revoked.keyHash,
        { id: revoked.id, tenant_id: revoked.tenantId, status: ApiKeyStatus.revoked },
        { ttlSeconds: ctx.apiKeyLookupTtlSeconds, onlyIfAbsent: false },
      );
    } catch (err) {
      // The key is revoked in PostgreSQL, but a cached "active" entry may live until its
      // TTL: say so, and let the caller retry (safe, the route is idempotent).
      throw new ServiceUnavailableError('The key is revoked, but the key cache could not be updated yet; retry to make revocation immediate.', 1, err);
    }
    res.json({ id: revoked.id, status: ApiKeyStatus.revoked });
  });

  return router;
}
