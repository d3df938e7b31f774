/**
 * A key's own money in OpenAI's legacy dashboard shapes, which one-api/new-api clients (and
 * the chat front-ends built on them) call with the key itself (issue 12):
 * - `GET /v1/dashboard/billing/subscription`: `hard_limit_usd` (and the soft/system limits,
 *   equal) is the key's account limit: its budget, else its tenant's quota;
 * - `GET /v1/dashboard/billing/usage?start_date=&end_date=`: `total_usage` in cents of the
 *   account's committed spend in [start_date, end_date), with `daily_costs` per model.
 * One unit of money (1,000,000 micros) is shown as one dollar. The legacy fields are decimal
 * numbers because those clients read them so; every figure also comes as exact integer micros
 * (`*_micros`), the ones to compute with.
 */
import { Router, type RequestHandler } from 'express';
import type { UsageService } from '../../services/usage-service';
import { apiKeyAuthOf } from '../auth';
import { dashboardUsageQuerySchema } from '../schemas';

const MICROS_PER_UNIT = 1_000_000;
const MICROS_PER_CENT = 10_000;

export function dashboardBillingRouter(deps: { usage: UsageService; authenticate: RequestHandler }): Router {
  const router = Router();

  router.get('/v1/dashboard/billing/subscription', deps.authenticate, async (_req, res) => {
    const { tenantId, apiKeyId } = apiKeyAuthOf(res);
    const account = await deps.usage.account(tenantId, apiKeyId);
    const limitUsd = account.limitMicros / MICROS_PER_UNIT;
    res.json({
      object: 'billing_subscription',
      has_payment_method: true,
      soft_limit_usd: limitUsd,
      hard_limit_usd: limitUsd,
      system_hard_limit_usd: limitUsd,
      access_until: 0,
      account_scope: account.scope,
      hard_limit_micros: account.limitMicros,
      used_micros: account.usedMicros,
      remaining_micros: account.remainingMicros,
    });
  });

  router.get('/v1/dashboard/billing/usage', deps.authenticate, async (req, res) => {
    const { tenantId, apiKeyId } = apiKeyAuthOf(res);
    const q = dashboardUsageQuerySchema.parse(req.query);
    const costs = await deps.usage.accountDailyCosts(tenantId, apiKeyId, q.start_date, q.end_date);
    const days = new Map<string, Array<{ name: string; cost: number; cost_micros: number }>>();
    let totalMicros = 0;
    for (const c of costs) {
      totalMicros += c.costMicros;
      const items = days.get(c.day) ?? [];
      items.push({ name: c.model, cost: c.costMicros / MICROS_PER_CENT, cost_micros: c.costMicros });
      days.set(c.day, items);
    }
    res.json({
      object: 'list',
      total_usage: totalMicros / MICROS_PER_CENT,
      total_usage_micros: totalMicros,
      daily_costs: [...days].map(([day, lineItems]) => ({ timestamp: Date.parse(`${day}T00:00:00Z`) / 1000, line_items: lineItems })),
    });
  });

  return router;
}
