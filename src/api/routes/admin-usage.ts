/**
 * Spend reports (issue 12): `GET /admin/tenants/:id/usage` and `GET /admin/api-keys/:id/usage`
 * with `?from=&to=&group_by=day|model|api_key`, from the ledger's committed usage. JSON
 * `{data: [{group, requests, prompt_tokens, completion_tokens, cost_micros}]}` (exact integers),
 * or CSV with the same columns when the client asks for `Accept: text/csv`.
 */
import { Router, type Request, type Response } from 'express';
import type { UsageRow } from '../../db/usage-report-repository';
import type { UsageService } from '../../services/usage-service';
import { apiKeyParamsSchema, tenantParamsSchema, usageQuerySchema } from '../schemas';

const CSV_COLUMNS = ['group', 'requests', 'prompt_tokens', 'completion_tokens', 'cost_micros'] as const;

interface UsageView {
  group: string;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  cost_micros: number;
}

const toView = (r: UsageRow): UsageView => ({
  group: r.group,
  requests: r.requests,
  prompt_tokens: r.promptTokens,
  completion_tokens: r.completionTokens,
  cost_micros: r.costMicros,
});

/** RFC 4180: a field with a comma, quote or line break is quoted, quotes doubled. A leading =+-@ is not a formula. */
function csvField(value: string | number): string {
  const text = String(value);
  const safe = typeof value === 'string' && /^[=+\-@]/.test(text) ? `'${text}` : text;
  return /[",\r\n]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

function send(req: Request, res: Response, rows: UsageRow[], window: { from: Date; to: Date; groupBy: string }): void {
  const views = rows.map(toView);
  if (req.accepts(['application/json', 'text/csv']) === 'text/csv') {
    const lines = [CSV_COLUMNS.join(','), ...views.map((v) => CSV_COLUMNS.map((c) => csvField(v[c])).join(','))];
    res.type('text/csv').send(`${lines.join('\r\n')}\r\n`);
    return;
  }
  res.json({ object: 'list', from: window.from.toISOString(), to: window.to.toISOString(), group_by: window.groupBy, data: views });
}

export function adminUsageRoutes(usage: UsageService): Router {
  const router = Router();

  router.get('/tenants/:id/usage', async (req, res) => {
    const { id } = tenantParamsSchema.parse(req.params);
    const window = usageQuerySchema.parse(req.query);
    send(req, res, await usage.tenantUsage(id, window), window);
  });

  router.get('/api-keys/:id/usage', async (req, res) => {
    const { id } = apiKeyParamsSchema.parse(req.params);
    const window = usageQuerySchema.parse(req.query);
    send(req, res, await usage.keyUsage(id, window), window);
  });

  return router;
}
