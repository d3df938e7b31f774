/**
 * BudgetWindowRepository (issue 12): the budget windows of tenants and API keys
 * (budget_window), and the ledger spend of one window (billing_transaction.budget_windows),
 * see migrations/20261202000040_budget_windows.ts and docs/budget-windows.md.
 */
import type { Knex } from 'knex';
import type { BudgetPeriod } from '../billing/budget-window-period';
import { TransactionKind, TransactionStatus, safeInteger } from './ledger-types';

export type BudgetWindowSubjectKind = 'tenant' | 'api_key';

/** One cap of a subject: at most `limitMicros` per calendar `period` in `timeZone`. */
export interface BudgetWindowCap {
  period: BudgetPeriod;
  limitMicros: number;
}

export interface BudgetWindowSettings {
  /** Canonical IANA zone shared by all windows of the subject; 'UTC' when it has none. */
  timeZone: string;
  /** Shortest period first. */
  caps: BudgetWindowCap[];
}

interface BudgetWindowRow {
  subject_kind: BudgetWindowSubjectKind;
  subject_id: string;
  period: BudgetPeriod;
  limit_micros: string;
  timezone: string;
}

const TABLE = 'budget_window';
const PERIOD_ORDER: Record<BudgetPeriod, number> = { daily: 0, weekly: 1, monthly: 2 };



function settingsOf(rows: BudgetWindowRow[]): BudgetWindowSettings {
  if (rows.length === 0) return { timeZone: 'UTC', caps: [] };
  const caps = rows
    .map((row) => ({ period: row.period, limitMicros: safeInteger('limit_micros', row.limit_micros) }))
    .sort((a, b) => PERIOD_ORDER[a.period] - PERIOD_ORDER[b.period]);
  return { timeZone: rows[0]!.timezone, caps };
}

/** Usage of one window by the ledger formula (committed amounts + pending reservations), and the pending reservations it counts, from one snapshot. */
export interface WindowUsageSnapshot {
  usageMicros: number;
  /** Oldest first. */
  pending: Array<{ requestId: string; reservedMicros: number }>;
}

const USAGE_SUM = `COALESCE(SUM(CASE status WHEN 'committed' THEN amount_micros WHEN 'pending' THEN reserved_micros ELSE 0 END), 0)::text`;

export function createBudgetWindowRepository(db: Knex) {
  return {
    /** The windows of one subject. */
    async settings(kind: BudgetWindowSubjectKind, subjectId: string, trx?: Knex.Transaction): Promise<BudgetWindowSettings> {
      return settingsOf(await (trx ?? db)<BudgetWindowRow>(TABLE).where({ subject_kind: kind, subject_id: subjectId }));
    },

    /** The windows of a tenant and of one of its keys, in one query (the admission's read). */
    async forRequest(tenantId: string, apiKeyId: string, trx?: Knex.Transaction): Promise<{ tenant: BudgetWindowSettings; key: BudgetWindowSettings }> {
      const rows = await (trx ?? db)<BudgetWindowRow>(TABLE)
        .where((q) => q.where({ subject_kind: 'tenant', subject_id: tenantId }).orWhere({ subject_kind: 'api_key', subject_id: apiKeyId }))
        .andWhere('tenant_id', tenantId);
      return { tenant: settingsOf(rows.filter((r) => r.subject_kind === 'tenant')), key: settingsOf(rows.filter((r) => r.subject_kind === 'api_key')) };
    },

    /**
     * Replaces the windows of a subject (inside the caller's transaction, with the subject's
     * other settings): rows of a period that stays are updated in place, so a changed cap
     * keeps the window's spend (the spend lives in the ledger under the window id, not here).
     */
    async replace(trx: Knex.Transaction, kind: BudgetWindowSubjectKind, subjectId: string, tenantId: string, settings: BudgetWindowSettings): Promise<void> {
      const periods = settings.caps.map((c) => c.period);
      await trx(TABLE).where({ subject_kind: kind, subject_id: subjectId }).whereNotIn('period', periods).delete();
      if (settings.caps.length === 0) return;
      await trx(TABLE)
        .insert(settings.caps.map((c) => ({ subject_kind: kind, subject_id: subjectId, tenant_id: tenantId, period: c.period, limit_micros: c.limitMicros, timezone: settings.timeZone })))
        .onConflict(['subject_kind', 'subject_id', 'period'])
        .merge(['limit_micros', 'timezone']);
    },

    /**
     * A window's ledger usage and the pending reservations it counts, from ONE statement (one
     * snapshot, as the counters' warm-up needs), index-backed (GIN on budget_windows).
     */
    async windowUsageSnapshot(windowId: string, trx?: Knex.Transaction): Promise<WindowUsageSnapshot> {
      const result = await (trx ?? db).raw<{ rows: Array<{ request_id: string | null; micros: string }> }>(
        `SELECT NULL::text AS request_id, ${USAGE_SUM} AS micros, 0 AS part, 0::bigint AS id FROM billing_transaction WHERE budget_windows @> ARRAY[?]::text[] AND kind = ?
         UNION ALL
         SELECT request_id, reserved_micros::text AS micros, 1 AS part, id FROM billing_transaction WHERE budget_windows @> ARRAY[?]::text[] AND kind = ? AND status = ?
         ORDER BY part, id`,
        [windowId, TransactionKind.usage, windowId, TransactionKind.usage, TransactionStatus.pending],
      );
      const sum = result.rows.find((row) => row.request_id === null);
      const pending = result.rows.flatMap((row) => (row.request_id === null ? [] : [{ requestId: row.request_id, reservedMicros: safeInteger('reserved_micros', row.micros) }]));
      return { usageMicros: safeInteger('window_usage', sum?.micros ?? '0'), pending };
    },

    /**
     * The ledger usage of many windows in one statement per 500 ids (the consistency check):
     * each entry counts in every window it names that is asked for. Windows without entries are 0.
     */
    async windowsLedgerUsage(windowIds: readonly string[]): Promise<Map<string, number>> {
      const usage = new Map<string, number>(windowIds.map((id) => [id, 0]));
      for (let i = 0; i < windowIds.length; i += 500) {
        const chunk = windowIds.slice(i, i + 500);
        const result = await db.raw<{ rows: Array<{ window_id: string; micros: string }> }>(
          `SELECT w AS window_id, ${USAGE_SUM} AS micros
             FROM billing_transaction, unnest(budget_windows) AS w
            WHERE budget_windows && ?::text[] AND kind = ? AND w = ANY(?::text[])
            GROUP BY w`,
          [chunk, TransactionKind.usage, chunk],
        );
        for (const row of result.rows) usage.set(row.window_id, safeInteger('window_usage', row.micros));
      }
      return usage;
    },

    /** A window's ledger usage inside the caller's transaction (the PostgreSQL fallback admission, under its row locks). */
    async windowLedgerUsage(windowId: string, trx?: Knex.Transaction): Promise<number> {
      const row = await (trx ?? db)('billing_transaction')
        .whereRaw('budget_windows @> ARRAY[?]::text[]', [windowId])
        .andWhere('kind', TransactionKind.usage)
        .first<{ micros: string } | undefined>(db.raw(`${USAGE_SUM} AS micros`));
      return safeInteger('window_usage', row?.micros ?? '0');
    },
  };
}

export type BudgetWindowRepository = ReturnType<typeof createBudgetWindowRepository>;
