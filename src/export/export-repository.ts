/**
 * The export's state in PostgreSQL (docs/usage-export.md): which entries each destination
 * still has to receive, what it acknowledged, its backoff and lease, and the daily
 * reconciliation. The outbox rows themselves are written by the ledger's commit
 * (./export-outbox.ts).
 *
 * An entry is due for a destination while it has no acknowledged (or held) delivery row
 * there. That is a per-entry record, not a sequence cursor: ledger ids are taken when a
 * row is inserted and committed in another order, so a "last id sent" cursor could step
 * over an entry whose transaction commits after a later one's.
 */
import type { Knex } from 'knex';
import { safeInteger } from '../db/ledger-types';
import type { ExportEvent } from './destinations';
import { EXPORT_OUTBOX } from './export-outbox';

const DELIVERY = 'usage_export_delivery';
const DESTINATION = 'usage_export_destination';
const RECONCILIATION = 'usage_export_reconciliation';

interface OutboxRow {
  ledger_id: string | number;
  event_id: string;
  tenant_id: string;
  api_key_id: string | null;
  model: string | null;
  prompt_tokens: number;
  completion_tokens: number;
  cost_micros: string | number;
  committed_at: Date;
}

const toEvent = (r: OutboxRow): ExportEvent => ({
  ledgerId: safeInteger('ledger_id', r.ledger_id),
  eventId: r.event_id,
  tenantId: r.tenant_id,
  apiKeyId: r.api_key_id,
  model: r.model,
  promptTokens: r.prompt_tokens,
  completionTokens: r.completion_tokens,
  costMicros: safeInteger('cost_micros', r.cost_micros),
  committedAt: r.committed_at,
});

export interface DestinationState {
  consecutiveFailures: number;
  nextAttemptAt: Date | null;
  lastSuccessAt: Date | null;
  lastError: string | null;
}

export interface ExportBacklog {
  /** Committed entries the destination has not acknowledged (held ones included). */
  undelivered: number;
  /** Held: past the dedupe window, not resent, waiting for an operator's decision. */
  held: number;
  /** Age of the oldest unacknowledged entry, seconds (0 when none). */
  lagSeconds: number;
}

export interface ReconciliationResult {
  day: string;
  destination: string;
  ledgerEntries: number;
  acknowledged: number;
  missing: number;
  unexpected: number;
  held: number;
  sample: { missing: number[]; unexpected: number[]; held: number[] };
  checkedAt: Date;
}

const SAMPLE = 20;

/** Entries of `destination` not acknowledged: no delivery row there with delivered_at or held. */
const unacknowledged = (q: Knex | Knex.Transaction, destination: string, includeHeld: boolean) =>
  q(`${EXPORT_OUTBOX} as o`).whereNotExists(
    q(`${DELIVERY} as d`)
      .select(q.raw('1'))
      .where('d.destination', destination)
      .andWhereRaw('d.ledger_id = o.ledger_id')
      .andWhere((w) => {
        void w.whereNotNull('d.delivered_at');
        if (!includeHeld) void w.orWhere('d.outcome', 'held');
      }),
  );

export function createExportRepository(db: Knex) {
  return {
    /** The oldest `limit` entries due for `destination` (held ones excluded), by ledger id. */
    async due(destination: string, limit: number): Promise<ExportEvent[]> {
      const rows = await unacknowledged(db, destination, false).select('o.*').orderBy('o.ledger_id').limit(limit) as OutboxRow[];
      return rows.map(toEvent);
    },

    /** Records an attempt at each entry (first_attempt_at stays the first one's: the dedupe window runs from it). */
    async recordAttempt(destination: string, ledgerIds: number[]): Promise<void> {
      if (ledgerIds.length === 0) return;
      await db(DELIVERY)
        .insert(ledgerIds.map((id) => ({ destination, ledger_id: id, attempts: 1 })))
        .onConflict(['destination', 'ledger_id'])
        .merge({ attempts: db.raw(`${DELIVERY}.attempts + 1`), last_attempt_at: db.fn.now() });
    },

    /** Marks entries acknowledged (delivered now, or already there: a duplicate). */
    async recordAcknowledged(destination: string, ledgerIds: number[], outcome: 'delivered' | 'duplicate'): Promise<void> {
      if (ledgerIds.length === 0) return;
      await db(DELIVERY)
        .where('destination', destination)
        .whereIn('ledger_id', ledgerIds)
        .whereNull('delivered_at')
        .update({ delivered_at: db.fn.now(), outcome, last_error: null });
    },

    async recordError(destination: string, ledgerIds: number[], error: string): Promise<void> {
      if (ledgerIds.length === 0) return;
      await db(DELIVERY).where('destination', destination).whereIn('ledger_id', ledgerIds).whereNull('delivered_at').update({ last_error: error.slice(0, 500) });
    },

    /**
     * Holds the entries first sent more than `windowSeconds` ago and never acknowledged: a
     * resend past the destination's dedupe window could count twice, so they wait for a
     * reconciliation (an operator checks the destination, then resolveHeld). Returns how many.
     */
    async holdStale(destination: string, windowSeconds: number): Promise<number> {
      return db(DELIVERY)
        .where('destination', destination)
        .whereNull('delivered_at')
        .whereNull('outcome')
        .andWhere('first_attempt_at', '<', db.raw('now() - make_interval(secs => ?)', [windowSeconds]))
        .update({ outcome: 'held' });
    },

    /** An operator's decision on a held entry: the destination has it (acknowledged), or it has not (resend, a new window). */
    async resolveHeld(destination: string, ledgerId: number, resolution: 'acknowledged' | 'resend'): Promise<boolean> {
      const update = resolution === 'acknowledged'
        ? { delivered_at: db.fn.now(), outcome: 'delivered' }
        : { outcome: null, first_attempt_at: db.fn.now(), last_attempt_at: db.fn.now() };
      const n = await db(DELIVERY).where({ destination, ledger_id: ledgerId, outcome: 'held' }).whereNull('delivered_at').update(update);
      return n > 0;
    },

    /** Takes the destination for `seconds` unless another run holds it; false when it does. */
    async acquireLease(destination: string, seconds: number): Promise<boolean> {
      const result = await db.raw<{ rows: unknown[] }>(
        `INSERT INTO ${DESTINATION} (destination, lease_until) VALUES (?, now() + make_interval(secs => ?))
         ON CONFLICT (destination) DO UPDATE SET lease_until = EXCLUDED.lease_until, updated_at = now()
         WHERE ${DESTINATION}.lease_until IS NULL OR ${DESTINATION}.lease_until < now()
         RETURNING destination`,
        [destination, seconds],
      );
      return result.rows.length > 0;
    },

    async releaseLease(destination: string): Promise<void> {
      await db(DESTINATION).where('destination', destination).update({ lease_until: null });
    },

    async state(destination: string): Promise<DestinationState> {
      const row = await db(DESTINATION).where('destination', destination).first<{ consecutive_failures: number; next_attempt_at: Date | null; last_success_at: Date | null; last_error: string | null } | undefined>();
      return {
        consecutiveFailures: row?.consecutive_failures ?? 0,
        nextAttemptAt: row?.next_attempt_at ?? null,
        lastSuccessAt: row?.last_success_at ?? null,
        lastError: row?.last_error ?? null,
      };
    },

    /** Whether the destination's backoff has passed (by the database's clock). */
    async backoffOver(destination: string): Promise<boolean> {
      const row = await db(DESTINATION).where('destination', destination).first<{ over: boolean } | undefined>(db.raw('(next_attempt_at IS NULL OR next_attempt_at <= now()) AS over'));
      return row?.over ?? true;
    },

    /** A failed run: the next attempt waits min(initial x 2^(failures-1), max) seconds. */
    async recordFailure(destination: string, error: string, backoff: { initialSeconds: number; maxSeconds: number }): Promise<DestinationState> {
      await db.raw(
        `INSERT INTO ${DESTINATION} (destination, consecutive_failures, next_attempt_at, last_error)
         VALUES (?, 1, now() + make_interval(secs => ?), ?)
         ON CONFLICT (destination) DO UPDATE SET
           consecutive_failures = ${DESTINATION}.consecutive_failures + 1,
           next_attempt_at = now() + make_interval(secs => LEAST(?::float8 * power(2, ${DESTINATION}.consecutive_failures), ?::float8)),
           last_error = EXCLUDED.last_error, updated_at = now()`,
        [destination, backoff.initialSeconds, error.slice(0, 500), backoff.initialSeconds, backoff.maxSeconds],
      );
      return this.state(destination);
    },

    async recordSuccess(destination: string): Promise<void> {
      await db.raw(
        `INSERT INTO ${DESTINATION} (destination, last_success_at) VALUES (?, now())
         ON CONFLICT (destination) DO UPDATE SET consecutive_failures = 0, next_attempt_at = NULL, last_error = NULL, last_success_at = now(), updated_at = now()`,
        [destination],
      );
    },

    /** The backlog gauges of one destination. */
    async backlog(destination: string): Promise<ExportBacklog> {
      const row = await unacknowledged(db, destination, true).first<{ undelivered: number; lag: number }>(
        db.raw('count(*)::int AS undelivered'),
        db.raw('COALESCE(EXTRACT(EPOCH FROM now() - min(o.committed_at)), 0)::float8 AS lag'),
      );
      const held = await db(DELIVERY).where({ destination, outcome: 'held' }).whereNull('delivered_at').first<{ n: number }>(db.raw('count(*)::int AS n'));
      return { undelivered: row?.undelivered ?? 0, held: held?.n ?? 0, lagSeconds: Math.max(0, row?.lag ?? 0) };
    },

    /**
     * The daily reconciliation of one destination for one UTC day: the ledger's committed
     * usage entries of that day against what the destination acknowledged of them. Missing:
     * committed, not acknowledged. Unexpected: acknowledged, but the ledger has no committed
     * usage entry of that day with that id and cost (a changed or removed entry). Held: past
     * the dedupe window, not resent. The result replaces that day's previous one.
     */
    async reconcile(destination: string, day: string): Promise<ReconciliationResult> {
      const result = await db.raw<{ rows: Array<{ ledger_id: string | null; kind: string }> }>(
        `WITH ledger AS (
           SELECT id, amount_micros FROM billing_transaction
           WHERE kind = 'usage' AND status = 'committed'
             AND committed_at >= (?::date)::timestamp AT TIME ZONE 'UTC' AND committed_at < (?::date + 1)::timestamp AT TIME ZONE 'UTC'
         ),
         acked AS (
           SELECT d.ledger_id, d.outcome, d.delivered_at, o.cost_micros FROM ${DELIVERY} d
           JOIN ${EXPORT_OUTBOX} o ON o.ledger_id = d.ledger_id
           WHERE d.destination = ? AND o.committed_at >= (?::date)::timestamp AT TIME ZONE 'UTC' AND o.committed_at < (?::date + 1)::timestamp AT TIME ZONE 'UTC'
         )
         SELECT NULL::text AS ledger_id, count(*)::text AS kind FROM ledger
         UNION ALL
         SELECT l.id::text AS ledger_id,
                CASE WHEN a.delivered_at IS NOT NULL THEN 'ok' WHEN a.outcome = 'held' THEN 'held' ELSE 'missing' END AS kind
           FROM ledger l LEFT JOIN acked a ON a.ledger_id = l.id
           WHERE a.delivered_at IS NULL OR a.cost_micros = l.amount_micros
         UNION ALL
         SELECT a.ledger_id::text, 'unexpected' FROM acked a LEFT JOIN ledger l ON l.id = a.ledger_id
           WHERE a.delivered_at IS NOT NULL AND (l.id IS NULL OR l.amount_micros <> a.cost_micros)`,
        [day, day, destination, day, day],
      );
      const ledgerEntries = Number(result.rows.find((r) => r.ledger_id === null)?.kind ?? 0);
      const by = (kind: string) => result.rows.filter((r) => r.ledger_id !== null && r.kind === kind).map((r) => Number(r.ledger_id)).sort((a, b) => a - b);
      const ok = by('ok');
      const missing = by('missing');
      const unexpected = by('unexpected');
      const held = by('held');
      const row = {
        day,
        destination,
        ledger_entries: ledgerEntries,
        acknowledged: ok.length + unexpected.length,
        missing: missing.length,
        unexpected: unexpected.length,
        held: held.length,
        sample: JSON.stringify({ missing: missing.slice(0, SAMPLE), unexpected: unexpected.slice(0, SAMPLE), held: held.slice(0, SAMPLE) }),
        checked_at: new Date(),
      };
      await db(RECONCILIATION).insert(row).onConflict(['day', 'destination']).merge();
      return {
        day, destination, ledgerEntries: row.ledger_entries, acknowledged: row.acknowledged, missing: row.missing, unexpected: row.unexpected, held: row.held,
        sample: { missing: missing.slice(0, SAMPLE), unexpected: unexpected.slice(0, SAMPLE), held: held.slice(0, SAMPLE) }, checkedAt: row.checked_at,
      };
    },

    /**
     * Deletes up to `limit` outbox rows committed more than `retentionDays` ago that every
     * destination in `destinations` acknowledged (their delivery rows go with them). A row
     * some destination has not acknowledged, held ones included, is kept however old.
     * Returns how many went.
     */
    async prune(destinations: readonly string[], retentionDays: number, limit: number): Promise<number> {
      const result = await db.raw<{ rowCount: number }>(
        `DELETE FROM ${EXPORT_OUTBOX} WHERE ledger_id IN (
           SELECT o.ledger_id FROM ${EXPORT_OUTBOX} o
           WHERE o.committed_at < now() - make_interval(days => ?)
             AND NOT EXISTS (
               SELECT 1 FROM unnest(?::text[]) AS d(name)
               WHERE NOT EXISTS (SELECT 1 FROM ${DELIVERY} x WHERE x.destination = d.name AND x.ledger_id = o.ledger_id AND x.delivered_at IS NOT NULL))
           ORDER BY o.ledger_id LIMIT ?)`,
        [retentionDays, [...destinations], limit],
      );
      return result.rowCount;
    },

    /** Reconciliation results, newest day first (the admin endpoint and the differences gauge). */
    async reconciliations(opts: { day?: string; limit: number }): Promise<ReconciliationResult[]> {
      const query = db(RECONCILIATION).select('*', db.raw(`to_char(day, 'YYYY-MM-DD') AS day_text`)).orderBy([{ column: 'day', order: 'desc' }, { column: 'destination' }]).limit(opts.limit);
      if (opts.day !== undefined) void query.where('day', opts.day);
      const rows = await query as Array<{ day_text: string; destination: string; ledger_entries: number; acknowledged: number; missing: number; unexpected: number; held: number; sample: ReconciliationResult['sample']; checked_at: Date }>;
      return rows.map((r) => ({
        day: r.day_text, destination: r.destination, ledgerEntries: r.ledger_entries, acknowledged: r.acknowledged,
        missing: r.missing, unexpected: r.unexpected, held: r.held, sample: r.sample, checkedAt: r.checked_at,
      }));
    },

    /** Differences (missing + unexpected + held) of each destination's latest reconciled day. */
    async latestDifferences(): Promise<Record<string, number>> {
      const rows = await db.raw<{ rows: Array<{ destination: string; n: number }> }>(
        `SELECT DISTINCT ON (destination) destination, (missing + unexpected + held)::int AS n FROM ${RECONCILIATION} ORDER BY destination, day DESC`,
      );
      return Object.fromEntries(rows.rows.map((r) => [r.destination, r.n]));
    },
  };
}

export type ExportRepository = ReturnType<typeof createExportRepository>;

/** The metrics' snapshot (src/metrics.ts UsageExportSnapshot) of the configured destinations. */
export function usageExportSnapshot(repo: ExportRepository, configured: readonly string[] | (() => Promise<readonly string[]>)) {
  return async (): Promise<Record<string, { undelivered: number; held: number; lagSeconds: number; reconciliationDifferences: number }>> => {
    const destinations = typeof configured === 'function' ? await configured() : configured;
    if (destinations.length === 0) return {};
    const differences = await repo.latestDifferences();
    const out: Record<string, { undelivered: number; held: number; lagSeconds: number; reconciliationDifferences: number }> = {};
    for (const d of destinations) out[d] = { ...(await repo.backlog(d)), reconciliationDifferences: differences[d] ?? 0 };
    return out;
  };
}
