/**
 * Admin tenant routes: create, read, update limits and alert settings, top up, rotate
 * the alert signing secret, and list the ledger of a tenant (the logic is the tenant
 * service's: src/services/tenant-service.ts).
 *
 * `alert_webhook_secret` appears only in the answer that generated it (the first webhook
 * URL, or a rotation), with `Cache-Control: no-store`; no GET ever returns it.
 *
 * A tenant's `used_micros` is the live Redis counter (reservations included) when it
 * is cached, else the ledger's usage (committed + pending): the same figure admission
 * works with, so `remaining_micros` is what the tenant can still spend.
 */
import { Router, type Response } from 'express';
import type { LedgerEntry } from '../../db/ledger-types';
import type { TenantBalance, TenantService, TenantWritten } from '../../services/tenant-service';
import type { BudgetWindowAdmin } from '../../services/budget-windows';
import { budgetWindowPatchOf, toBudgetWindowView, type BudgetWindowView } from '../budget-window-schemas';
import {
  alertSettingsOf,
  createTenantBodySchema,
  patchLimitsBodySchema,
  rateLimitsOf,
  tenantParamsSchema,
  toAlertSettingsView,
  toRateLimitView,
  topUpBodySchema,
  transactionsQuerySchema,
  type AlertSettingsView,
  type RateLimitView,
} from '../schemas';

/** `GET /admin/tenants/:id` and the answer of every tenant write. */
export interface TenantView extends RateLimitView, AlertSettingsView, BudgetWindowView {
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

function toTenantView(tenant: TenantBalance, windows: BudgetWindowView): TenantView {
  return {
    id: tenant.tenantId,
    name: tenant.name,
    quota_limit_micros: tenant.quotaLimitMicros,
    used_micros: tenant.usedMicros,
    remaining_micros: tenant.remainingMicros,
    ...toRateLimitView(tenant.limits),
    ...toAlertSettingsView(tenant.alerts),
    ...windows,
  };
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

export function adminTenantRoutes(tenants: TenantService, windows: BudgetWindowAdmin): Router {
  const router = Router();

  const viewOf = async (tenant: TenantBalance): Promise<TenantView> => toTenantView(tenant, toBudgetWindowView(await windows.view('tenant', tenant.tenantId, tenant.tenantId)));

  /** The answer of a create or update: the view, plus the signing secret when this write generated it. */
  async function sendWritten(res: Response, status: number, tenant: TenantWritten): Promise<void> {
    const view = await viewOf(tenant);
    if (tenant.alertWebhookSecret === undefined) {
      res.status(status).json(view);
      return;
    }
    // The secret must not linger in any cache between the service and the admin.
    res.status(status).set('Cache-Control', 'no-store').json({ ...view, alert_webhook_secret: tenant.alertWebhookSecret });
  }

  router.post('/tenants', async (req, res) => {
    const body = createTenantBodySchema.parse(req.body);
    const budget = budgetWindowPatchOf(body);
    await windows.check('tenant', body.id, budget);
    const tenant = await tenants.create({ tenantId: body.id, name: body.name, quotaLimitMicros: body.quota_limit_micros, limits: rateLimitsOf(body), alerts: alertSettingsOf(body) });
    await windows.apply('tenant', body.id, body.id, budget);
    await sendWritten(res, 201, tenant);
  });

  router.get('/tenants/:id', async (req, res) => {
    const { id } = tenantParamsSchema.parse(req.params);
    res.json(await viewOf(await tenants.get(id)));
  });

  /** Sets rate limits, alert settings and budget windows; null clears a limit or the webhook URL. */
  router.patch('/tenants/:id', async (req, res) => {
    const { id } = tenantParamsSchema.parse(req.params);
    const body = patchLimitsBodySchema.parse(req.body);
    const budget = budgetWindowPatchOf(body);
    // Everything that can refuse runs before the first write: a 400 or 404 changes nothing.
    await windows.check('tenant', id, budget);
    const updated = await tenants.update(id, { limits: rateLimitsOf(body), alerts: alertSettingsOf(body) });
    await windows.apply('tenant', id, id, budget);
    await sendWritten(res, 200, updated);
  });

  /** Replaces the webhook signing secret: the new one is in this answer only. */
  router.post('/tenants/:id/alert-secret', async (req, res) => {
    const { id } = tenantParamsSchema.parse(req.params);
    const secret = await tenants.rotateAlertSecret(id);
    res.status(200).set('Cache-Control', 'no-store').json({ id, alert_webhook_secret: secret });
  });

  /** Idempotent on `reference`: 201 when credited now, 200 when the reference was credited before. */
  router.post('/tenants/:id/topups', async (req, res) => {
    const { id } = tenantParamsSchema.parse(req.params);
    const body = topUpBodySchema.parse(req.body);
    const { created, tenant } = await tenants.topUp(id, body.amount_micros, body.reference);
    res.status(created ? 201 : 200).json(await viewOf(tenant));
  });

  router.get('/tenants/:id/transactions', async (req, res) => {
    const { id } = tenantParamsSchema.parse(req.params);
    const query = transactionsQuerySchema.parse(req.query);
    const page = await tenants.transactions(id, { limit: query.limit, cursor: query.cursor ?? null });
    res.json({ data: page.data.map(toTransactionView), next_cursor: page.nextCursor });
  });

  return router;
}
