/**
 * BillingRepository: the ledger (billing_transaction) and the PostgreSQL fallback
 * admission (M2.3, M3.4, M3.5). Every admission, through Redis or through the
 * fallback, leaves a pending row holding its worst-case reservation, so the ledger
 * alone knows a tenant's true usage:
 *   usage = SUM(amount of committed usage rows) + SUM(reserved of pending usage rows)
 * Exactly once is enforced by the database: request_id is UNIQUE, inserts use
 * ON CONFLICT DO NOTHING, and transitions are conditional UPDATEs on status.
 */
import type { Knex } from 'knex';
import {
  AdmissionPath,
  InvalidCursorError,
  InvalidPageSizeError,
  LedgerEntryNotFoundError,
  LedgerRequestConflictError,
  LedgerStateError,
  MAX_PAGE_SIZE,
  TransactionKind,
  TransactionStatus,
  assertNonNegativeInteger,
  safeInteger,
  toLedgerEntry,
  type BillingTransactionRow,
  type CommitTransactionInput,
  type FallbackAdmission,
  type FallbackReservationInput,
  type LedgerEntry,
  type LedgerPage,
  type PendingTransactionInput,
  type RecordTransactionInput,
} from './ledger-types';
import type { RemainingBalance } from '../billing/money';

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

/** Refuses to answer with (or overwrite) an entry that another tenant or another kind already owns. */
function assertSameOwner(entry: LedgerEntry, tenantId: string, kind: TransactionKind): LedgerEntry {
  if (entry.tenantId !== tenantId || entry.kind !== kind) throw new LedgerRequestConflictError(entry.requestId, entry);
  return entry;
}

const nonNegative = (micros: number): number => Math.max(0, micros);

/** Usage (committed amounts + pending reservations) and the pending reservations it counts, from one snapshot. */
export interface LedgerUsageSnapshot {
  usageMicros: number;
  /** Oldest first. */
  pending: Array<{ requestId: string; reservedMicros: number }>;
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
        reserved_micros: input.reservedMicros,
        admission_path: input.admissionPath,
        prompt_tokens: input.promptTokens ?? null,
      },
      trx,
    );
  };

  /** Remaining balance read from the ledger (no locks): used to describe a duplicate reservation. */
  const ledgerBalance = async (tenantId: string, apiKeyId: string | null, trx: Knex.Transaction): Promise<RemainingBalance> => {
    const tenant = await trx<{ quota_limit_micros: string }>('tenant_quota').where('tenant_id', tenantId).first('quota_limit_micros');
    const key = apiKeyId === null ? undefined : await trx<{ budget_micros: string | null }>('api_key_quota').where('id', apiKeyId).first('budget_micros');
    const limit = tenant === undefined ? 0 : safeInteger('quota_limit_micros', tenant.quota_limit_micros);
    const budget = key?.budget_micros == null ? null : safeInteger('budget_micros', key.budget_micros);
    return {
      tenantRemainingMicros: nonNegative(limit - (await tenantLedgerUsage(tenantId, trx))),
      keyRemainingMicros: budget === null || apiKeyId === null ? null : nonNegative(budget - (await apiKeyLedgerSpend(apiKeyId, trx))),
    };
  };

  const duplicateOf = async (entry: LedgerEntry, tenantId: string, trx: Knex.Transaction): Promise<FallbackAdmission> => {
    assertSameOwner(entry, tenantId, TransactionKind.usage);
    return { status: 'duplicate', reservedMicros: entry.reservedMicros, entry, ...(await ledgerBalance(tenantId, entry.apiKeyId, trx)) };
  };

  return {
    createPendingTransaction,

    /** pending -> committed with the final usage (M3.4); a second call changes nothing and reports committed:false. */
    async commitPendingTransaction(input: CommitTransactionInput, trx?: Knex.Transaction): Promise<{ committed: boolean; entry: LedgerEntry }> {
      assertNonNegativeInteger('amountMicros', input.amountMicros);
      assertNonNegativeInteger('promptTokens', input.promptTokens);
      assertNonNegativeInteger('completionTokens', input.completionTokens);
      const q = trx ?? db;
      const updated = await q(LEDGER)
        .where({ request_id: input.requestId, status: TransactionStatus.pending })
        .update({
          status: TransactionStatus.committed,
          amount_micros: input.amountMicros,
          prompt_tokens: input.promptTokens,
          completion_tokens: input.completionTokens,
          token_source: input.tokenSource,
          committed_at: q.fn.now(),
          updated_at: q.fn.now(),
        })
        .returning<BillingTransactionRow[]>('*');
      const row = updated[0];
      if (row !== undefined) return { committed: true, entry: toLedgerEntry(row) };
      const entry = await requireRow(input.requestId, trx);
      if (entry.status !== TransactionStatus.committed) throw new LedgerStateError(input.requestId, entry.status, 'commit');
      return { committed: false, entry };
    },

    /** pending -> voided (amount 0: a full refund of the reservation); idempotent. */
    async voidPendingTransaction(input: { requestId: string; reason: string }, trx?: Knex.Transaction): Promise<{ voided: boolean; entry: LedgerEntry }> {
      const q = trx ?? db;
      const updated = await q(LEDGER)
        .where({ request_id: input.requestId, status: TransactionStatus.pending })
        .update({
          status: TransactionStatus.voided,
          amount_micros: 0,
          failure_reason: input.reason,
          voided_at: q.fn.now(),
          updated_at: q.fn.now(),
        })
        .returning<BillingTransactionRow[]>('*');
      const row = updated[0];
      if (row !== undefined) return { voided: true, entry: toLedgerEntry(row) };
      const entry = await requireRow(input.requestId, trx);
      if (entry.status !== TransactionStatus.voided) throw new LedgerStateError(input.requestId, entry.status, 'void');
      return { voided: false, entry };
    },

    /** A one-step committed entry: a top-up, or a usage that never had a pending row (M3.5). Idempotent by requestId. */
    async recordTransaction(input: RecordTransactionInput, trx?: Knex.Transaction): Promise<{ created: boolean; entry: LedgerEntry }> {
      assertNonNegativeInteger('amountMicros', input.amountMicros);
      if (input.promptTokens !== undefined) assertNonNegativeInteger('promptTokens', input.promptTokens);
      if (input.completionTokens !== undefined) assertNonNegativeInteger('completionTokens', input.completionTokens);
      const q = trx ?? db;
      return insertOnce(
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
        trx,
      );
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
     * The PostgreSQL fallback admission (M2.3) while Redis is unreachable. One transaction
     * locks the tenant row, then the key row (always in that order: no deadlock), so
     * concurrent fallback admissions of a tenant run one after another and each sees the
     * previous one's pending row in the ledger sum: no overspend by races.
     */
    async reserveInLedger(input: FallbackReservationInput, trx?: Knex.Transaction): Promise<FallbackAdmission> {
      assertNonNegativeInteger('reservedMicros', input.reservedMicros);
      const amount = input.reservedMicros;
      const admit = async (t: Knex.Transaction): Promise<FallbackAdmission> => {
        // A retry of an admitted request answers as before, even if the key was revoked since.
        const earlier = await findRow(input.requestId, t);
        if (earlier !== undefined) return duplicateOf(earlier, input.tenantId, t);

        const tenant = await t<{ quota_limit_micros: string }>('tenant_quota')
          .where('tenant_id', input.tenantId)
          .forUpdate()
          .first('quota_limit_micros');
        if (tenant === undefined) return { status: 'tenant_missing' };
        // Filtering on tenant_id too: a key of another tenant is never locked nor charged.
        const key = await t<{ id: string; tenant_id: string; status: string; budget_micros: string | null }>('api_key_quota')
          .where({ id: input.apiKeyId, tenant_id: input.tenantId, status: 'active' })
          .forUpdate()
          .first('budget_micros');
        if (key === undefined) return { status: 'key_missing' };

        // The same request may have been admitted while this one waited for the lock.
        const raced = await findRow(input.requestId, t);
        if (raced !== undefined) return duplicateOf(raced, input.tenantId, t);

        const limit = safeInteger('quota_limit_micros', tenant.quota_limit_micros);
        const budget = key.budget_micros === null ? null : safeInteger('budget_micros', key.budget_micros);
        const used = await tenantLedgerUsage(input.tenantId, t);
        const spent = await apiKeyLedgerSpend(input.apiKeyId, t);
        const balance = (taken: number): RemainingBalance => ({
          tenantRemainingMicros: nonNegative(limit - used - taken),
          keyRemainingMicros: budget === null ? null : nonNegative(budget - spent - taken),
        });
        // BigInt keeps the comparison exact even past 2^53.
        if (BigInt(used) + BigInt(amount) > BigInt(limit)) return { status: 'insufficient_quota', ...balance(0) };
        if (budget !== null && BigInt(spent) + BigInt(amount) > BigInt(budget)) return { status: 'budget_exceeded', ...balance(0) };

        const { created, entry } = await createPendingTransaction({ ...input, admissionPath: AdmissionPath.postgres }, t);
        if (!created) return duplicateOf(entry, input.tenantId, t);
        return { status: 'reserved', reservedMicros: amount, entry, ...balance(amount) };
      };
      return trx ? trx.transaction(admit) : db.transaction(admit);
    },
  };
};

export type BillingRepository = ReturnType<typeof createBillingRepository>;
