/**
 * Admin tenant routes: create, read, top up, and list the ledger of a tenant.
 *
 * A tenant's `used_micros` is the live Redis counter (reservations included) when it
 * is cached, else the ledger's usage (committed + pending): the same figure admission
 * works with, so `remaining_micros` is what the tenant can still spend.
 */
import { Router } from 'express';
import { z } from 'zod';
import { InvalidCursorError, LedgerRequestConflictError, TransactionKind, type LedgerEntry } from '../../db/ledger-types';
import {
  QuotaLimitOverflowError,
  TenantAlreadyExistsError,
  raiseCachedQuotaLimit,
  type Tenant,
} from '../../db/tenant-repository';
import { readTenantQuota } from '../../redis/quota-cache';
import { ConflictError, InvalidRequestError, NotFoundError } from '../errors';
import { createTenantBodySchema, tenantIdSchema, topUpBodySchema, transactionsQuerySchema } from '../schemas';
import type { AdminContext } from './admin';

/** `GET /admin/tenants/:id` and the answer of every tenant write. */
export interface TenantView {
  id: string;
  name: string;
  quota_limit_micros: number;
  used_micros: number;
  remaining_micros: number;
}

/** One row of `GET /admin/tenants/:id/transactions`. */
export interface TransactionView {
  id: number;
  request_id: string;
  kind: string;
  status: string;
  model: string | null;
  api_key_id: string | null;
  reserved_micros: number;
  amount_micros: number | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  token_source: string | null;
  created_at: string;
  committed_at: string | null;
}

const tenantParamsSchema = z.object({ id: tenantIdSchema });

/** The ledger request id of a top-up: one per (tenant, reference), which makes top-ups idempotent. */
export function topUpRequestId(tenantId: string, reference: string): string {
  return `topup:${tenantId}:${reference}`;
}

export function toTransactionView(entry: LedgerEntry): TransactionView {
  return {
    id: entry.id,
    request_id: entry.requestId,
    kind: entry.kind,
    status: entry.status,
    model: entry.model,
    api_key_id: entry.apiKeyId,
    reserved_micros: entry.reservedMicros,
    amount_micros: entry.amountMicros,
    prompt_tokens: entry.promptTokens,
    completion_tokens: entry.completionTokens,
    token_source: entry.tokenSource,
    created_at: entry.createdAt.toISOString(),
    committed_at: entry.committedAt === null ? null : entry.committedAt.toISOString(),
  };
}

export function adminTenantRoutes(ctx: AdminContext): Router {
  const { db, redis, logger, tenants, billing } = ctx;
  const router = Router();

  async function usedMicros(tenantId: string): Promise<number> {
    try {
      const cached = await readTenantQuota(redis, tenantId);
      if (cached) return cached.usedMicros;
    } catch (err) {
      logger.warn({ err, tenantId }, 'tenant quota cache unreadable; reporting ledger usage');
    }
    return billing.tenantLedgerUsage(tenantId);
  }

  async function tenantView(tenant: Tenant): Promise<TenantView> {
    const used = await usedMicros(tenant.tenantId);
    return {
      id: tenant.tenantId,
      name: tenant.name,
      quota_limit_micros: tenant.quotaLimitMicros,
      used_micros: used,
      remaining_micros: tenant.quotaLimitMicros - used,
    };
  }

  async function requireTenant(tenantId: string): Promise<Tenant> {
    const tenant = await tenants.find(tenantId);
    if (!tenant) throw new NotFoundError(`Tenant '${tenantId}'`);
    return tenant;
  }

  router.post('/tenants', async (req, res) => {
    const body = createTenantBodySchema.parse(req.body);
    let tenant: Tenant;
    try {
      tenant = await tenants.create({ tenantId: body.id, name: body.name, quotaLimitMicros: body.quota_limit_micros });
    } catch (err) {
      if (err instanceof TenantAlreadyExistsError) throw new ConflictError(`Tenant '${body.id}' already exists.`);
      throw err;
    }
    res.status(201).json(await tenantView(tenant));
  });

  router.get('/tenants/:id', async (req, res) => {
    const { id } = tenantParamsSchema.parse(req.params);
    res.json(await tenantView(await requireTenant(id)));
  });

  /**
   * Credits a tenant once per reference. The ledger row and the limit raise commit
   * together; the ledger's UNIQUE request id makes a repeated or concurrent reference
   * a no-op. The cached limit is raised afterwards to the committed PostgreSQL limit
   * with max() semantics, so out-of-order Redis calls still end at the exact sum.
   */
  router.post('/tenants/:id/topups', async (req, res) => {
    const { id } = tenantParamsSchema.parse(req.params);
    const body = topUpBodySchema.parse(req.body);
    let created: boolean;
    try {
      created = await db.transaction(async (trx) => {
        if (!(await tenants.find(id, trx))) throw new NotFoundError(`Tenant '${id}'`);
        const recorded = await billing.recordTransaction(
          { requestId: topUpRequestId(id, body.reference), tenantId: id, kind: TransactionKind.topup, amountMicros: body.amount_micros },
          trx,
        );
        if (!recorded.created) {
          if (recorded.entry.amountMicros !== body.amount_micros) {
            throw new ConflictError(`Reference '${body.reference}' was already used for a top-up of ${String(recorded.entry.amountMicros)} micros.`);
          }
          return false;
        }
        await tenants.raiseLimit(id, body.amount_micros, trx);
        return true;
      });
    } catch (err) {
      if (err instanceof QuotaLimitOverflowError) {
        throw new InvalidRequestError('This top-up would raise the quota limit beyond the largest exact amount.', 'amount_micros', err);
      }
      if (err instanceof LedgerRequestConflictError) throw new ConflictError(`Reference '${body.reference}' is already used.`);
      throw err;
    }
    // Read after commit: it includes every top-up committed so far, ours and concurrent ones.
    const tenant = await requireTenant(id);
    try {
      await raiseCachedQuotaLimit(redis, id, tenant.quotaLimitMicros);
    } catch (err) {
      // The credit is committed: answering an error here could make the caller retry with a
      // new reference and credit twice. A lower cached limit only denies early (never
      // overspends); the same reference again, or the next quota sync, raises it.
      logger.warn({ err, tenantId: id }, 'top-up committed but the cached quota limit was not raised');
    }
    res.status(created ? 201 : 200).json(await tenantView(tenant));
  });

  router.get('/tenants/:id/transactions', async (req, res) => {
    const { id } = tenantParamsSchema.parse(req.params);
    const query = transactionsQuerySchema.parse(req.query);
    await requireTenant(id);
    let page;
    try {
      page = await billing.listTenantTransactions(id, { limit: query.limit, cursor: query.cursor ?? null });
    } catch (err) {
      if (err instanceof InvalidCursorError) throw new InvalidRequestError('Invalid cursor: use the next_cursor of a previous page.', 'cursor', err);
      throw err;
    }
    res.json({ data: page.data.map(toTransactionView), next_cursor: page.nextCursor });
  });

  return router;
}
