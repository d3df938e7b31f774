/**
 * Admin API-key routes: issue a key (shown once), read its budget, change its limits
 * and alert settings, revoke it (immediately: see src/services/api-key-service.ts).
 * A key's first webhook URL may generate its tenant's signing secret: then the answer
 * carries `alert_webhook_secret`, once.
 */
import { Router } from 'express';
import type { ApiKey, ApiKeyStatus } from '../../db/api-key-repository';
import type { ApiKeyService } from '../../services/api-key-service';
import type { BudgetWindowAdmin } from '../../services/budget-windows';
import { budgetWindowPatchOf, toBudgetWindowView, type BudgetWindowView } from '../budget-window-schemas';
import {
  alertSettingsOf,
  apiKeyParamsSchema,
  createApiKeyBodySchema,
  patchLimitsBodySchema,
  rateLimitsOf,
  tenantParamsSchema,
  toAlertSettingsView,
  toRateLimitView,
  type AlertSettingsView,
  type RateLimitView,
} from '../schemas';

/** `POST /admin/tenants/:id/api-keys`: the only answer that ever holds the key. */
export interface CreatedApiKeyView extends RateLimitView, AlertSettingsView, BudgetWindowView {
  id: string;
  key: string;
  /** Only when this key's webhook URL generated its tenant's signing secret. */
  alert_webhook_secret?: string;
  tenant_id: string;
  name: string;
  budget_micros: number | null;
  status: ApiKeyStatus;
}

/** `GET /admin/api-keys/:id` */
export interface ApiKeyView extends RateLimitView, AlertSettingsView, BudgetWindowView {
  id: string;
  tenant_id: string;
  name: string;
  budget_micros: number | null;
  spent_micros: number;
  status: ApiKeyStatus;
}


function toApiKeyView({ key, spentMicros }: { key: ApiKey; spentMicros: number }, windows: BudgetWindowView): ApiKeyView {
  return {
    id: key.id,
    tenant_id: key.tenantId,
    name: key.name,
    budget_micros: key.budgetMicros,
    spent_micros: spentMicros,
    status: key.status,
    ...toRateLimitView(key.limits),
    ...toAlertSettingsView(key.alerts),
    ...windows,
  };
}

export function adminApiKeyRoutes(apiKeys: ApiKeyService, windows: BudgetWindowAdmin): Router {
  const router = Router();
  const windowsOf = async (key: ApiKey): Promise<BudgetWindowView> => toBudgetWindowView(await windows.view('api_key', key.id, key.tenantId));

  router.post('/tenants/:id/api-keys', async (req, res) => {
    const { id: tenantId } = tenantParamsSchema.parse(req.params);
    const body = createApiKeyBodySchema.parse(req.body);
    const budget = budgetWindowPatchOf(body);
    // A new key has no windows yet: check() needs no id (and refuses a lone budget_timezone).
    await windows.check('api_key', '', budget);
    const { stored, key, alertWebhookSecret } = await apiKeys.issue(tenantId, body.name, body.budget_micros ?? null, rateLimitsOf(body), alertSettingsOf(body));
    await windows.apply('api_key', stored.id, stored.tenantId, budget);
    const view: CreatedApiKeyView = {
      id: stored.id,
      key,
      tenant_id: stored.tenantId,
      name: stored.name,
      budget_micros: stored.budgetMicros,
      status: stored.status,
      ...toRateLimitView(stored.limits),
      ...toAlertSettingsView(stored.alerts),
      ...(await windowsOf(stored)),
      ...(alertWebhookSecret === undefined ? {} : { alert_webhook_secret: alertWebhookSecret }),
    };
    // The key must not linger in any cache between the gateway and the admin.
    res.status(201).set('Cache-Control', 'no-store').json(view);
  });

  router.get('/api-keys/:id', async (req, res) => {
    const { id } = apiKeyParamsSchema.parse(req.params);
    const found = await apiKeys.get(id);
    res.json(toApiKeyView(found, await windowsOf(found.key)));
  });

  /** Sets rate limits, alert settings and budget windows; null clears a limit or the webhook URL. */
  router.patch('/api-keys/:id', async (req, res) => {
    const { id } = apiKeyParamsSchema.parse(req.params);
    const body = patchLimitsBodySchema.parse(req.body);
    const budget = budgetWindowPatchOf(body);
    // Everything that can refuse runs before the first write: a 400 or 404 changes nothing.
    if (budget !== undefined) await apiKeys.get(id);
    await windows.check('api_key', id, budget);
    const updated = await apiKeys.update(id, { limits: rateLimitsOf(body), alerts: alertSettingsOf(body) });
    await windows.apply('api_key', id, updated.key.tenantId, budget);
    const view = toApiKeyView(updated, await windowsOf(updated.key));
    if (updated.alertWebhookSecret === undefined) {
      res.json(view);
      return;
    }
    res.set('Cache-Control', 'no-store').json({ ...view, alert_webhook_secret: updated.alertWebhookSecret });
  });

  router.delete('/api-keys/:id', async (req, res) => {
    const { id } = apiKeyParamsSchema.parse(req.params);
    const revoked = await apiKeys.revoke(id);
    res.json({ id: revoked.id, status: revoked.status });
  });

  return router;
}
