/**
 * BillingRepository: the ledger (billing_transaction), with the PostgreSQL fallback
 * admission of ./fallback-admission.ts (M2.3, M3.4, M3.5). Every admission, through Redis or through the
 * fallback, leaves a pending row holding its worst-case reservation, so the ledger
 * alone knows a tenant's true usage:
 *   usage = SUM(amount of committed usage rows) + SUM(reserved of pending usage rows)
 * Exactly once is enforced by the database: request_id is UNIQUE, inserts use
 * ON CONFLICT DO NOTHING, and transitions are conditional UPDATEs on status.
 */
import type { Knex } from 'knex';
import { EXPORT_OUTBOX, writeExportOutbox } from '../export/export-outbox';
import { createFallbackAdmission } from './fallback-admission';
import {
  InvalidCursorError,
  InvalidPageSizeError,
  LedgerEntryNotFoundError,
  LedgerStateError,
  MAX_PAGE_SIZE,
  TransactionKind,
  TransactionStatus,
  assertNonNegativeInteger,
  assertSameOwner,
  safeInteger,
  toLedgerEntry,
  type BillingTransactionRow,
  type CommitTransactionInput,
  type LedgerEntry,
  type LedgerPage,
  type PendingTransactionInput,
  type RecordTransactionInput,
} from './ledger-types';

export type {
  CommitTransactionInput,
  FallbackAdmission,
  FallbackReservationInput,
  LedgerEntry,
  LedgerPage,
  PendingTransactionInput,
  RecordTransactionInput,
} from './ledger-types';

const LEDGER = 'billing_transaction';

// A cursor is the base64url of the last id served: opaque to clients, cheap to check.
const encodeCursor = (id: number): string => Buffer.from(String(id), 'utf8').toString('base64url');

function decodeCursor(cursor: string): number {
  const text = /^[A-Za-z0-9_-]{1,32}$/.test(cursor) ? Buffer.from(cursor, 'base64url').toString('utf8') : '';
  const id = /^[1-9]\d*$/.test(text) ? Number(text) : Number.NaN;
  // Re-encoding must give the same string: rejects padding tricks and non-canonical forms.
  if (!Number.isSafeInteger(id) || encodeCursor(id) !== cursor) throw new InvalidCursorError(cursor);
  return id;
}

/** Usage (committed amounts + pending reservations) and the pending reservations it counts, from one snapshot. */
export interface LedgerUsageSnapshot {
  usageMicros: number;
  /** Oldest first. */
  pending: Array<{ requestId: string; reservedMicros: number }>;
}

/** Where a page of stale pending rows ended: created_at as PostgreSQL text (exact to the microsecond) and the id. */
export interface StalePendingCursor {
  createdAt: string;
  id: number;
}

/** Stale pending usage rows, oldest first; `next` is null on the last page. */
export interface StalePendingPage {
  entries: LedgerEntry[];
  next: StalePendingCursor | null;
}

/** Usage of the ledger formula, as exact text (SUM of BIGINT is NUMERIC). */
const USAGE_SUM = `COALESCE(SUM(CASE status WHEN 'committed' THEN amount_micros WHEN 'pending' THEN reserved_micros ELSE 0 END), 0)::text AS micros`;

export const createBillingRepository = (db: Knex) => {
  const findRow = async (requestId: string, trx?: Knex.Transaction): Promise<LedgerEntry | undefined> => {
    const row = await (trx ?? db)<BillingTransactionRow>(LEDGER).where('request_id', requestId).first();
    return row === undefined ? undefined : toLedgerEntry(row);
  };

  const requireRow = async (requestId: string, trx?: Knex.Transaction): Promise<LedgerEntry> => {
    const entry = await findRow(requestId, trx);
    if (entry === undefined) throw new LedgerEntryNotFoundError(requestId);
    return entry;
  };

  /** INSERT ... ON CONFLICT (request_id) DO NOTHING; the existing row when the request id is taken. */
  const insertOnce = async (
    values: Record<string, unknown> & { request_id: string; tenant_id: string; kind: TransactionKind },
    trx?: Knex.Transaction,
  ): Promise<{ created: boolean; entry: LedgerEntry }> => {
    const inserted = await (trx ?? db)(LEDGER).insert(values).onConflict('request_id').ignore().returning<BillingTransactionRow[]>('*');
    const row = inserted[0];
    if (row !== undefined) return { created: true, entry: toLedgerEntry(row) };
    const existing = await requireRow(values.request_id, trx);
    return { created: false, entry: assertSameOwner(existing, values.tenant_id, values.kind) };
  };

  const sumUsage = async (column: 'tenant_id' | 'api_key_id', id: string, trx?: Knex.Transaction): Promise<number> => {
    const row = await (trx ?? db)(LEDGER)
      .where(column, id)
      .andWhere('kind', TransactionKind.usage)
      .first<{ micros: string } | undefined>(db.raw(USAGE_SUM));
    return safeInteger('usage_sum', row?.micros ?? '0');
  };

  /**
   * The usage sum and the pending reservations it includes, from ONE statement: PostgreSQL
   * reads both halves of the UNION ALL in one snapshot, so a reservation committed or
   * voided meanwhile is either counted pending in both or in neither (what a warm-up needs).
   */
  const usageSnapshot = async (column: 'tenant_id' | 'api_key_id', id: string, trx?: Knex.Transaction): Promise<LedgerUsageSnapshot> => {
    const q = trx ?? db;
    const result = await q.raw<{ rows: Array<{ request_id: string | null; micros: string }> }>(
      `SELECT NULL::text AS request_id, ${USAGE_SUM}, 0 AS part, 0::bigint AS id FROM ${LEDGER} WHERE ?? = ? AND kind = ?
       UNION ALL
       SELECT request_id, reserved_micros::text AS micros, 1 AS part, id FROM ${LEDGER} WHERE ?? = ? AND kind = ? AND status = ?
       ORDER BY part, id`,
      [column, id, TransactionKind.usage, column, id, TransactionKind.usage, TransactionStatus.pending],
    );
    const sum = result.rows.find((row) => row.request_id === null);
    const pending = result.rows.flatMap((row) => (row.request_id === null ? [] : [{ requestId: row.request_id, reservedMicros: safeInteger('reserved_micros', row.micros) }]));
    return { usageMicros: safeInteger('usage_sum', sum?.micros ?? '0'), pending };
  };

  const tenantLedgerUsage = (tenantId: string, trx?: Knex.Transaction): Promise<number> => sumUsage('tenant_id', tenantId, trx);
  const apiKeyLedgerSpend = (apiKeyId: string, trx?: Knex.Transaction): Promise<number> => sumUsage('api_key_id', apiKeyId, trx);

  const createPendingTransaction = async (input: PendingTransactionInput, trx?: Knex.Transaction): Promise<{ created: boolean; entry: LedgerEntry }> => {
    assertNonNegativeInteger('reservedMicros', input.reservedMicros);
    if (input.promptTokens !== undefined) assertNonNegativeInteger('promptTokens', input.promptTokens);
    return insertOnce(
      {
        request_id: input.requestId,
        tenant_id: input.tenantId,
        api_key_id: input.apiKeyId,
        kind: TransactionKind.usage,
        status: TransactionStatus.pending,
        workflow_id: input.workflowId,
        model: input.model,
        operation: input.operation ?? 'chat',
        reserved_micros: input.reservedMicros,
        admission_path: input.admissionPath,
        prompt_tokens: input.promptTokens ?? null,
        budget_windows: [...(input.budgetWindows ?? [])],
      },
      trx,
    );
  };

  const core = { findRow, createPendingTransaction, tenantLedgerUsage, apiKeyLedgerSpend };

  /**
   * Moves a pending row to its final status with a conditional UPDATE (only a pending
   * row changes). A row already in that status is a replay: unchanged, answered as it
   * is; a row settled the other way is a LedgerStateError.
   */
  const settlePending = async (
    requestId: string,
    attempted: 'commit' | 'void',
    values: Record<string, unknown> & { status: TransactionStatus },
    trx?: Knex.Transaction,
  ): Promise<{ changed: boolean; entry: LedgerEntry }> => {
    const q = trx ?? db;
    const updated = await q(LEDGER)
      .where({ request_id: requestId, status: TransactionStatus.pending })
      .update({ ...values, updated_at: q.fn.now() })
      .returning<BillingTransactionRow[]>('*');
    const row = updated[0];
    if (row !== undefined) return { changed: true, entry: toLedgerEntry(row) };
    const entry = await requireRow(requestId, trx);
    if (entry.status !== values.status) throw new LedgerStateError(requestId, entry.status, attempted);
    return { changed: false, entry };
  };

  return {
    createPendingTransaction,

    /** pending -> committed with the final usage (M3.4); a second call changes nothing and reports committed:false. */
    async commitPendingTransaction(input: CommitTransactionInput, trx?: Knex.Transaction): Promise<{ committed: boolean; entry: LedgerEntry }> {
      assertNonNegativeInteger('amountMicros', input.amountMicros);
      assertNonNegativeInteger('promptTokens', input.promptTokens);
      assertNonNegativeInteger('completionTokens', input.completionTokens);
      // The export outbox row is written by the commit's own statement (docs/usage-export.md):
      // a data-modifying CTE is one statement, so the row exists exactly when the commit does,
      // inside the caller's transaction or alone, and the hot settlement path keeps one round trip.
      const q = trx ?? db;
      const result = await q.raw<{ rows: BillingTransactionRow[] }>(
        `WITH committed AS (
           UPDATE ${LEDGER} SET status = ?, amount_micros = ?, prompt_tokens = ?, completion_tokens = ?, token_source = ?,
                  committed_at = now(), updated_at = now()
           WHERE request_id = ? AND status = ? RETURNING *
         ), exported AS (
           INSERT INTO ${EXPORT_OUTBOX} (ledger_id, event_id, tenant_id, api_key_id, model, prompt_tokens, completion_tokens, cost_micros, committed_at)
           SELECT id, request_id, tenant_id, api_key_id, model, COALESCE(prompt_tokens, 0), COALESCE(completion_tokens, 0), amount_micros, committed_at
           FROM committed WHERE kind = ?
           ON CONFLICT (ledger_id) DO NOTHING
         )
         SELECT * FROM committed`,
        [TransactionStatus.committed, input.amountMicros, input.promptTokens, input.completionTokens, input.tokenSource,
          input.requestId, TransactionStatus.pending, TransactionKind.usage],
      );
      const row = result.rows[0];
      if (row !== undefined) return { committed: true, entry: toLedgerEntry(row) };
      // Not pending any more: a replay (already committed) or a LedgerStateError (voided).
      const entry = await requireRow(input.requestId, trx);
      if (entry.status !== TransactionStatus.committed) throw new LedgerStateError(input.requestId, entry.status, 'commit');
      return { committed: false, entry };
    },

    /** pending -> voided (amount 0: a full refund of the reservation); idempotent. */
    async voidPendingTransaction(input: { requestId: string; reason: string }, trx?: Knex.Transaction): Promise<{ voided: boolean; entry: LedgerEntry }> {
      const q = trx ?? db;
      const { changed, entry } = await settlePending(input.requestId, 'void', {
        status: TransactionStatus.voided,
        amount_micros: 0,
        failure_reason: input.reason,
        voided_at: q.fn.now(),
      }, trx);
      return { voided: changed, entry };
    },

    /** A one-step committed entry: a top-up, or a usage that never had a pending row (M3.5). Idempotent by requestId. */
    async recordTransaction(input: RecordTransactionInput, trx?: Knex.Transaction): Promise<{ created: boolean; entry: LedgerEntry }> {
      assertNonNegativeInteger('amountMicros', input.amountMicros);
      if (input.promptTokens !== undefined) assertNonNegativeInteger('promptTokens', input.promptTokens);
      if (input.completionTokens !== undefined) assertNonNegativeInteger('completionTokens', input.completionTokens);
      const record = async (q: Knex.Transaction) => {
        const result = await insertOnce(
          {
            request_id: input.requestId,
            tenant_id: input.tenantId,
            api_key_id: input.apiKeyId ?? null,
            kind: input.kind,
            status: TransactionStatus.committed,
            workflow_id: input.workflowId ?? null,
            model: input.model ?? null,
            amount_micros: input.amountMicros,
            prompt_tokens: input.promptTokens ?? null,
            completion_tokens: input.completionTokens ?? null,
            token_source: input.tokenSource ?? null,
            committed_at: q.fn.now(),
          },
          q,
        );
        // A one-step usage entry is exported like a committed pending one; top-ups are not usage.
        if (result.created) await writeExportOutbox(q, result.entry);
        return result;
      };
      return trx ? record(trx) : db.transaction(record);
    },

    findByRequestId: findRow,

    /** Newest first, keyset pagination on id (stable while new rows arrive). */
    async listTenantTransactions(tenantId: string, page: { limit: number; cursor?: string | null }, trx?: Knex.Transaction): Promise<LedgerPage> {
      if (!Number.isSafeInteger(page.limit) || page.limit < 1 || page.limit > MAX_PAGE_SIZE) throw new InvalidPageSizeError(page.limit);
      const before = page.cursor == null ? null : decodeCursor(page.cursor);
      const query = (trx ?? db)<BillingTransactionRow>(LEDGER).where('tenant_id', tenantId);
      if (before !== null) void query.andWhere('id', '<', before);
      // One extra row tells whether another page exists without a COUNT.
      const rows = await query.orderBy('id', 'desc').limit(page.limit + 1);
      const data = rows.slice(0, page.limit).map(toLedgerEntry);
      const last = data[data.length - 1];
      return { data, nextCursor: rows.length > page.limit && last !== undefined ? encodeCursor(last.id) : null };
    },

    tenantLedgerUsage,
    apiKeyLedgerSpend,

    /** A tenant's ledger usage and the pending reservations it includes, read in one snapshot (for the warm-up, M2.2). */
    tenantUsageSnapshot: (tenantId: string, trx?: Knex.Transaction): Promise<LedgerUsageSnapshot> => usageSnapshot('tenant_id', tenantId, trx),

    /** An API key's ledger spend and the pending reservations it includes, read in one snapshot. */
    apiKeyUsageSnapshot: (apiKeyId: string, trx?: Knex.Transaction): Promise<LedgerUsageSnapshot> => usageSnapshot('api_key_id', apiKeyId, trx),

    /** How many rows are pending and how old the oldest is: the pending-reservation gauges. */
    async pendingSummary(trx?: Knex.Transaction): Promise<{ count: number; oldestSeconds: number }> {
      const row = await (trx ?? db)(LEDGER)
        .where('status', 'pending')
        .first<{ count: number; oldest: number } | undefined>(db.raw('count(*)::int AS count'), db.raw('COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS oldest'));
      return { count: row?.count ?? 0, oldestSeconds: row?.oldest ?? 0 };
    },

    /**
     * One page of the usage rows left pending longer than `olderThanSeconds` (by the database's
     * clock), oldest first, after `after`: what the sweeper examines (src/sweeper/). Keyset
     * pagination on (created_at, id) served by the partial index billing_transaction_pending
     * (created_at) WHERE status = 'pending': the predicate matches it, so the cost follows the
     * pending rows, not the ledger. The cursor carries created_at as PostgreSQL's own text
     * (microseconds), which a JavaScript Date would round to milliseconds and so skip or repeat rows.
     */
    async listStalePending(page: { olderThanSeconds: number; after: StalePendingCursor | null; limit: number }, trx?: Knex.Transaction): Promise<StalePendingPage> {
      if (!Number.isSafeInteger(page.limit) || page.limit < 1) throw new InvalidPageSizeError(page.limit);
      assertNonNegativeInteger('olderThanSeconds', page.olderThanSeconds);
      const q = trx ?? db;
      const query = q(LEDGER)
        .select('*', q.raw('created_at::text AS created_at_cursor'))
        .where({ status: TransactionStatus.pending, kind: TransactionKind.usage })
        .andWhere('created_at', '<', q.raw('now() - make_interval(secs => ?)', [page.olderThanSeconds]));
      const after = page.after;
      if (after !== null) {
        void query
          .andWhere('created_at', '>=', q.raw('?::timestamptz', [after.createdAt]))
          .andWhere((w) => void w.where('created_at', '>', q.raw('?::timestamptz', [after.createdAt])).orWhere('id', '>', after.id));
      }
      const rows = await query.orderBy([{ column: 'created_at' }, { column: 'id' }]).limit(page.limit) as Array<BillingTransactionRow & { created_at_cursor: string }>;
      const last = rows[rows.length - 1];
      return {
        entries: rows.map(toLedgerEntry),
        next: rows.length === page.limit && last !== undefined ? { createdAt: last.created_at_cursor, id: safeInteger('id', last.id) } : null,
      };
    },

    /** The PostgreSQL fallback admission (M2.3): see ./fallback-admission.ts. */
    reserveInLedger: createFallbackAdmission(db, core),
  };
};

export type BillingRepository = ReturnType<typeof createBillingRepository>;

/** What the fallback admission builds on: the ledger's own reads and its pending insert. */
export interface BillingRepositoryCore {
  findRow(requestId: string, trx?: Knex.Transaction): Promise<LedgerEntry | undefined>;
  createPendingTransaction(input: PendingTransactionInput, trx?: Knex.Transaction): Promise<{ created: boolean; entry: LedgerEntry }>;
  tenantLedgerUsage(tenantId: string, trx?: Knex.Transaction): Promise<number>;
  apiKeyLedgerSpend(apiKeyId: string, trx?: Knex.Transaction): Promise<number>;
}
