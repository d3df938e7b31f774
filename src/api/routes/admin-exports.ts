/**
 * The usage export's admin side (docs/usage-export.md):
 *   GET  /admin/exports/reconciliation?day=YYYY-MM-DD&limit=N  the daily reconciliations, newest day first
 *   GET  /admin/exports/:destination                            backlog, lag, held, backoff of one destination
 *   POST /admin/exports/:destination/held/:ledger_id            {"resolution": "acknowledged" | "resend"}
 * The last one is the operator's decision on an entry held past the destination's dedupe
 * window (Stripe, 24 h): the destination has it (never resent), or it has not (sent again
 * once, with a new window). Nothing here shows a destination's credentials.
 */
import { Router } from 'express';
import { z } from 'zod';
import { NotFoundError } from '../errors';
import { DESTINATION_NAMES, isDestinationName } from '../../export/destinations';
import type { ExportRepository, ReconciliationResult } from '../../export/export-repository';

const reconciliationQuery = z.object({
  day: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'a day as YYYY-MM-DD').refine((d) => !Number.isNaN(Date.parse(`${d}T00:00:00Z`)) && new Date(`${d}T00:00:00Z`).toISOString().startsWith(d), 'not a calendar day').optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
}).strict();

const heldBody = z.object({ resolution: z.enum(['acknowledged', 'resend']) }).strict();

const view = (r: ReconciliationResult) => ({
  day: r.day, destination: r.destination, ledger_entries: r.ledgerEntries, acknowledged: r.acknowledged,
  missing: r.missing, unexpected: r.unexpected, held: r.held,
  sample_ledger_ids: r.sample, checked_at: r.checkedAt.toISOString(),
});

function destinationParam(name: string): string {
  if (!isDestinationName(name)) throw new NotFoundError(`export destination ${name} (one of ${DESTINATION_NAMES.join(', ')})`);
  return name;
}

export function adminExportRoutes(deps: { exports: ExportRepository }): Router {
  const router = Router();

  router.get('/exports/reconciliation', async (req, res) => {
    const q = reconciliationQuery.parse(req.query);
    res.json({ object: 'list', data: (await deps.exports.reconciliations({ day: q.day, limit: q.limit })).map(view) });
  });

  router.get('/exports/:destination', async (req, res) => {
    const destination = destinationParam(req.params.destination);
    const [backlog, state] = await Promise.all([deps.exports.backlog(destination), deps.exports.state(destination)]);
    res.json({
      destination,
      undelivered: backlog.undelivered,
      held: backlog.held,
      lag_seconds: Math.round(backlog.lagSeconds),
      consecutive_failures: state.consecutiveFailures,
      next_attempt_at: state.nextAttemptAt?.toISOString() ?? null,
      last_success_at: state.lastSuccessAt?.toISOString() ?? null,
      last_error: state.lastError,
    });
  });

  router.post('/exports/:destination/held/:ledgerId', async (req, res) => {
    const destination = destinationParam(req.params.destination);
    const ledgerId = z.coerce.number().int().positive().parse(req.params.ledgerId);
    const { resolution } = heldBody.parse(req.body);
    if (!(await deps.exports.resolveHeld(destination, ledgerId, resolution))) throw new NotFoundError(`held entry ${ledgerId} of ${destination}`);
    res.json({ destination, ledger_id: ledgerId, resolution });
  });

  return router;
}
