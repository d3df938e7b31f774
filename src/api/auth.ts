/**
 * Authentication at the HTTP edge: tenants' API keys for the gateway routes and the
 * admin token for /admin. Keys and tokens are compared or hashed, never logged.
 *
 * API keys are resolved by their SHA-256 through the lookup cache (src/redis/api-key-cache.ts),
 * so the hot path costs one GET; PostgreSQL answers on a miss and whenever Redis fails
 * (M2.3: Redis being down degrades, it does not lock tenants out).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler, Response } from 'express';
import type { Redis } from '../redis/client';
import type { Logger } from '../log';
import { ApiKeyStatus, hashApiKey, type ApiKeyRepository } from '../db/api-key-repository';
import type { TenantRepository } from '../db/tenant-repository';
import type { RequestLimits } from '../edge/limits';
import { API_KEY_LOOKUP_TTL_SECONDS, lookupEntryOf, readApiKeyLookup, writeApiKeyLookup, type ApiKeyLookupEntry } from '../redis/api-key-cache';
import { AppError, ErrorCode, ErrorType, InvalidApiKeyError, ServiceUnavailableError } from './errors';

/** Who the request is billed to, and the rate limits it is bound by; set on `res.locals.auth` by the authenticator. */
export interface ApiKeyAuth {
  apiKeyId: string;
  tenantId: string;
  limits: RequestLimits;
}

/** Thrown when an admin endpoint is called without the admin token, or with a wrong one (401). */
export class AdminUnauthorizedError extends AppError {
  override readonly name = 'AdminUnauthorizedError';
  constructor(message = 'This endpoint requires the admin token: Authorization: Bearer <ADMIN_TOKEN>.') {
    super({ status: 401, type: ErrorType.invalidRequest, code: ErrorCode.invalidApiKey, message });
  }
}

/** Thrown when a route that needs an authenticated key runs without the authenticator in front of it. */
export class MissingAuthError extends Error {
  override name = 'MissingAuthError';
  constructor() {
    super('res.locals.auth is not set: mount the API-key authenticator before this route');
  }
}

/** The credential of `Authorization: Bearer <credential>`, or undefined. */
export function bearerCredential(header: string | undefined): string | undefined {
  const match = header === undefined ? null : /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  return match?.[1];
}

/** The authenticated key of this request. */
export function apiKeyAuthOf(res: Response): ApiKeyAuth {
  const auth: unknown = res.locals['auth'];
  if (typeof auth === 'object' && auth !== null && 'apiKeyId' in auth && 'tenantId' in auth && 'limits' in auth) {
    const { apiKeyId, tenantId, limits } = auth as Record<string, unknown>;
    if (typeof apiKeyId === 'string' && typeof tenantId === 'string' && typeof limits === 'object' && limits !== null) {
      return { apiKeyId, tenantId, limits: limits as RequestLimits };
    }
  }
  throw new MissingAuthError();
}

export interface ApiKeyAuthenticatorDeps {
  apiKeys: Pick<ApiKeyRepository, 'findByHash'>;
  tenants: Pick<TenantRepository, 'find'>;
  redis: Pick<Redis, 'get' | 'set'>;
  logger: Pick<Logger, 'warn'>;
  /** @default API_KEY_LOOKUP_TTL_SECONDS */
  cacheTtlSeconds?: number;
}

/**
 * Express middleware for `Authorization: Bearer <key>`: sets `res.locals.auth`, or
 * answers 401 invalid_api_key for a missing, unknown or revoked key.
 */
export function createApiKeyAuthenticator(deps: ApiKeyAuthenticatorDeps): RequestHandler {
  const { apiKeys } = deps;
  const ttlSeconds = deps.cacheTtlSeconds ?? API_KEY_LOOKUP_TTL_SECONDS;

  /** undefined = not cached or unreadable; throws only when Redis itself fails. */
  async function cachedLookup(keyHash: string): Promise<ApiKeyLookupEntry | undefined> {
    const cached = await readApiKeyLookup(deps.redis, keyHash);
    if (cached === 'unreadable') deps.logger.warn('unreadable API key lookup cache entry; reading PostgreSQL');
    return cached === 'unreadable' || cached === null ? undefined : cached;
  }

  async function databaseLookup(keyHash: string): Promise<ApiKeyLookupEntry | undefined> {
    try {
      const key = await apiKeys.findByHash(keyHash);
      const tenant = key ? await deps.tenants.find(key.tenantId) : null;
      return key && tenant ? lookupEntryOf(key, tenant) : undefined;
    } catch (err) {
      throw new ServiceUnavailableError('API key verification is temporarily unavailable.', 1, err);
    }
  }

  async function resolve(keyHash: string): Promise<ApiKeyLookupEntry | undefined> {
    let redisUp = true;
    try {
      const cached = await cachedLookup(keyHash);
      if (cached) return cached;
    } catch (err) {
      redisUp = false;
      deps.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'API key cache unavailable; reading PostgreSQL');
    }
    const entry = await databaseLookup(keyHash);
    if (entry && redisUp) {
      // NX: never overwrite an entry written meanwhile, above all a revocation's entry,
      // with what may be a pre-revocation read.
      await writeApiKeyLookup(deps.redis, keyHash, entry, { ttlSeconds, onlyIfAbsent: true }).catch((err: unknown) => {
        deps.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'API key cache write failed');
      });
    }
    return entry;
  }

  return async (req, res, next) => {
    const key = bearerCredential(req.get('authorization'));
    if (key === undefined) {
      throw new InvalidApiKeyError('You did not provide an API key: use Authorization: Bearer <key>.');
    }
    const entry = await resolve(hashApiKey(key));
    if (!entry || entry.status !== ApiKeyStatus.active) throw new InvalidApiKeyError();
    const auth: ApiKeyAuth = { apiKeyId: entry.id, tenantId: entry.tenant_id, limits: entry.limits };
    res.locals['auth'] = auth;
    next();
  };
}

function sha256(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/**
 * A test of a presented credential against adminToken. Both sides are hashed to
 * equal-length digests first, so timingSafeEqual runs in constant time and the
 * comparison leaks neither content nor length.
 */
export function adminTokenMatcher(adminToken: string): (presented: string) => boolean {
  if (adminToken.length === 0) throw new Error('adminAuth needs a non-empty admin token');
  const expected = sha256(adminToken);
  return (presented) => timingSafeEqual(sha256(presented), expected);
}

/** Middleware for admin routes: the bearer credential must be the admin token. */
export function adminAuth(adminToken: string): RequestHandler {
  const isAdminToken = adminTokenMatcher(adminToken);
  return (req, _res, next) => {
    const presented = bearerCredential(req.get('authorization'));
    if (presented === undefined || !isAdminToken(presented)) throw new AdminUnauthorizedError();
    next();
  };
}
