/**
 * The usage export's admin side (docs/usage-export.md):
 *   GET  /admin/exports/reconciliation?day=YYYY-MM-DD&limit=N  the daily reconciliations, newest day first
 *   GET  /admin/exports/:destination                            backlog, lag, held, backoff of one destination
 *   POST /admin/exports/:destination/held/:ledger_id            {"resolution": "acknowledged" | "resend"}
 *   PUT  /admin/exports/:destination                            its settings (replacing the environment's), credential write-only
 *   DELETE /admin/exports/:destination                          back to the environment's settings
 * The last one is the operator's decision on an entry held past the destination's dedupe
 * window (Stripe, 24 h): the destination has it (never resent), or it has not (sent again
 * once, with a new window). Nothing here shows a destination's credentials.
 */
import { Router } from 'express';
import { z } from 'zod';
import type { Config } from '../../config';
import { InvalidRequestError, NotFoundError } from '../errors';
import { DESTINATION_NAMES, isDestinationName, type DestinationName } from '../../export/destinations';
import type { ExportRepository, ReconciliationResult } from '../../export/export-repository';
import { DESTINATION_SETTINGS, type ExportSettingsRepository } from '../../export/export-settings';

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

function destinationParam(name: string): DestinationName {
  if (!isDestinationName(name)) throw new NotFoundError(`export destination ${name} (one of ${DESTINATION_NAMES.join(', ')})`);
  return name;
}

/** The environment's settings of a destination, without its credential (whether one is set only). */
function environmentSettings(config: Readonly<Config>, destination: DestinationName): { on: boolean; settings: Record<string, unknown>; secretSet: boolean } {
  switch (destination) {
    case 'openmeter':
      return {
        on: config.USAGE_EXPORT_OPENMETER_URL !== undefined, secretSet: config.USAGE_EXPORT_OPENMETER_TOKEN !== undefined,
        settings: { url: config.USAGE_EXPORT_OPENMETER_URL ?? null, source: config.USAGE_EXPORT_OPENMETER_SOURCE, type: config.USAGE_EXPORT_OPENMETER_TYPE, subject: config.USAGE_EXPORT_OPENMETER_SUBJECT },
      };
    case 'lago':
      return {
        on: config.USAGE_EXPORT_LAGO_URL !== undefined, secretSet: config.USAGE_EXPORT_LAGO_API_KEY !== undefined,
        settings: { url: config.USAGE_EXPORT_LAGO_URL ?? null, metric_code: config.USAGE_EXPORT_LAGO_METRIC_CODE, id_field: config.USAGE_EXPORT_LAGO_ID_FIELD, id_from: config.USAGE_EXPORT_LAGO_ID_FROM },
      };
    case 'stripe':
      return {
        on: config.USAGE_EXPORT_STRIPE_API_KEY !== undefined, secretSet: config.USAGE_EXPORT_STRIPE_API_KEY !== undefined,
        settings: { url: config.USAGE_EXPORT_STRIPE_URL, event_name: config.USAGE_EXPORT_STRIPE_EVENT_NAME, value: config.USAGE_EXPORT_STRIPE_VALUE, customers: config.USAGE_EXPORT_STRIPE_CUSTOMERS },
      };
    case 'webhook':
      return { on: config.USAGE_EXPORT_WEBHOOK_URL !== undefined, secretSet: config.USAGE_EXPORT_WEBHOOK_SECRET !== undefined, settings: { url: config.USAGE_EXPORT_WEBHOOK_URL ?? null } };
  }
}

export function adminExportRoutes(deps: { exports: ExportRepository; settings?: ExportSettingsRepository; config?: Readonly<Config> }): Router {
  const router = Router();

  router.get('/exports/reconciliation', async (req, res) => {
    const q = reconciliationQuery.parse(req.query);
    res.json({ object: 'list', data: (await deps.exports.reconciliations({ day: q.day, limit: q.limit })).map(view) });
  });

  router.get('/exports/:destination', async (req, res) => {
    const destination = destinationParam(req.params.destination);
    const [backlog, state, stored] = await Promise.all([deps.exports.backlog(destination), deps.exports.state(destination), deps.settings?.get(destination)]);
    const env = deps.config ? environmentSettings(deps.config, destination) : undefined;
    const configuration = stored
      ? { origin: 'admin', enabled: stored.enabled, settings: stored.settings, secret_set: stored.secretSet, updated_at: stored.updatedAt.toISOString() }
      : env?.on
        ? { origin: 'environment', enabled: true, settings: env.settings, secret_set: env.secretSet, updated_at: null }
        : { origin: 'none', enabled: false, settings: {}, secret_set: false, updated_at: null };
    res.json({
      destination,
      configuration,
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

  router.put('/exports/:destination', async (req, res) => {
    const destination = destinationParam(req.params.destination);
    if (!deps.settings) throw new NotFoundError('export settings');
    const spec = DESTINATION_SETTINGS[destination];
    const body = spec.schema
      .extend({ enabled: z.boolean().default(true), [spec.secretField]: z.string().min(1).max(500).nullable().optional() })
      .strict()
      .parse(req.body) as Record<string, unknown> & { enabled: boolean };
    const { enabled, [spec.secretField]: secret, ...settings } = body;
    if (spec.secretRequired && enabled && (secret === null || (secret === undefined && !(await deps.settings.hasSecret(destination))))) {
      throw new InvalidRequestError(`${destination} needs its ${spec.secretField}`, spec.secretField);
    }
    await deps.settings.put(destination, { enabled, settings, secret: secret as string | null | undefined });
    const stored = await deps.settings.get(destination);
    res.json({ destination, configuration: { origin: 'admin', enabled, settings, secret_set: stored?.secretSet ?? false, updated_at: stored?.updatedAt.toISOString() ?? null } });
  });

  router.delete('/exports/:destination', async (req, res) => {
    const destination = destinationParam(req.params.destination);
    if (!deps.settings || !(await deps.settings.remove(destination))) throw new NotFoundError(`admin settings of ${destination}`);
    res.json({ destination, deleted: true });
  });

  return router;
}
