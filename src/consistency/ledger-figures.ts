/**
 * The ledger side of the consistency check (M4.3): what every tenant and API key should
 * hold, by the ledger's usage formula (committed amounts + pending reservations, the
 * formula the warm-up uses: src/db/billing-repository.ts), read as set-based aggregates.
 *
 * - allSubjects(): every tenant and key with its ledger usage, a fingerprint of its ledger
 *   rows, and its synced-table figures, in ONE snapshot (a read-only REPEATABLE READ
 *   transaction): two GROUP BY scans of the ledger, however many subjects there are.
 * - snapshots(): for a batch of subjects (the candidates, the counters to rebuild) the same
 *   figures plus what a rebuild must mark in Redis (the pending reservations and the rows
 *   settled recently), again in one snapshot; index-backed by the ledger's
 *   (tenant_id, id) and (api_key_id, id) listing indexes.
 *
 * Ids travel as one JSON parameter (`jsonb_array_elements_text`), whatever characters they
 * hold and however many there are. pg returns SUM of BIGINT as NUMERIC text: every figure
 * is read back exactly or refused.
 */
import type { Knex } from 'knex';
import { safeInteger } from '../db/ledger-types';

/** What the consistency check compares: a tenant's quota counter, or an API key's budget counter. */
export const SubjectKind = {
  tenant: 'tenant',
  apiKey: 'api_key',
} as const;
export type SubjectKind = (typeof SubjectKind)[keyof typeof SubjectKind];

/**
 * Counts of a subject's usage rows: every ledger event (a pending row inserted, a row
 * committed or voided) raises one of them, so an unchanged fingerprint means the subject's
 * ledger did not move in between.
 */
export interface LedgerFingerprint {
  rows: number;
  settled: number;
}

export interface SubjectRef {
  kind: SubjectKind;
  tenantId: string;
  /** null for a tenant. */
  apiKeyId: string | null;
}

/** The ledger's figures for one subject. */
export interface LedgerFigures extends SubjectRef {
  usageMicros: number;
  fingerprint: LedgerFingerprint;
  /** A revoked key's counter is not warmed when missing (no request can use it). */
  active: boolean;
}

/** The synced table's copy (tenant_quota.used_micros / api_key_quota.spent_micros). */
export interface SyncedFigures {
  micros: number;
  syncedAt: Date | null;
  /** Synced, and no ledger row of the subject changed since (minus the margin): the copy must equal the ledger. */
  comparable: boolean;
}

export interface SubjectFigures extends LedgerFigures {
  synced: SyncedFigures;
}

/** Everything a rebuild of one counter needs, from one snapshot. */
export interface SubjectSnapshot extends LedgerFigures {
  /** The tenant's quota limit, or the key's budget (null = unlimited). */
  limitMicros: number | null;
  pending: Array<{ requestId: string; reservedMicros: number }>;
  /** Rows settled within the lookback (committed: their cost; voided: 0). */
  recentlySettled: Array<{ requestId: string; costMicros: number }>;
}

/** The usage formula, and the fingerprint, per subject. */
const AGGREGATES = `
  SUM(CASE status WHEN 'committed' THEN amount_micros WHEN 'pending' THEN reserved_micros ELSE 0 END)::text AS usage_micros,
  COUNT(*)::int AS rows, COUNT(*) FILTER (WHERE status <> 'pending')::int AS settled, MAX(updated_at) AS last_activity`;

const IDS = `ARRAY(SELECT jsonb_array_elements_text(?::jsonb))`;

interface AggregateRow {
  usage_micros: string | null;
  rows: number | null;
  settled: number | null;
}

interface TenantRow extends AggregateRow {
  tenant_id: string;
  synced_micros: string;
  synced_at: Date | null;
  comparable: boolean;
}

interface KeyRow extends TenantRow {
  api_key_id: string;
  status: string;
}

function figures(row: AggregateRow): { usageMicros: number; fingerprint: LedgerFingerprint } {
  return {
    usageMicros: row.usage_micros === null ? 0 : safeInteger('usage_micros', row.usage_micros),
    fingerprint: { rows: row.rows ?? 0, settled: row.settled ?? 0 },
  };
}

const readOnlySnapshot = { isolationLevel: 'repeatable read', readOnly: true } as const;

export function createConsistencyLedger(db: Knex) {
  /**
   * Every tenant (or those of `tenantIds`) and every key of them. `syncMarginMs`: a sync
   * reads Redis a moment after the ledger moved; activity closer than this to synced_at
   * makes the synced copy lagging rather than comparable.
   */
  async function allSubjects(opts: { tenantIds?: readonly string[]; syncMarginMs: number }): Promise<{ tenants: SubjectFigures[]; keys: SubjectFigures[] }> {
    const scoped = opts.tenantIds !== undefined;
    const scope = (column: string): string => (scoped ? `AND ${column} = ANY(${IDS})` : '');
    const ids = scoped ? [JSON.stringify(opts.tenantIds)] : [];
    const comparable = `(q.synced_at IS NOT NULL AND (u.last_activity IS NULL OR u.last_activity < q.synced_at - (? * interval '1 millisecond')))`;
    return db.transaction(async (trx) => {
      const tenants = await trx.raw<{ rows: TenantRow[] }>(
        `SELECT q.tenant_id, q.used_micros::text AS synced_micros, q.synced_at, ${comparable} AS comparable,
                u.usage_micros, u.rows, u.settled
           FROM tenant_quota q
           LEFT JOIN (SELECT tenant_id, ${AGGREGATES} FROM billing_transaction WHERE kind = 'usage' ${scope('tenant_id')} GROUP BY tenant_id) u USING (tenant_id)
          WHERE TRUE ${scope('q.tenant_id')}`,
        [opts.syncMarginMs, ...ids, ...ids],
      );
      const keys = await trx.raw<{ rows: KeyRow[] }>(
        `SELECT q.id AS api_key_id, q.tenant_id, q.status, q.spent_micros::text AS synced_micros, q.synced_at, ${comparable} AS comparable,
                u.usage_micros, u.rows, u.settled
           FROM api_key_quota q
           LEFT JOIN (SELECT api_key_id, ${AGGREGATES} FROM billing_transaction WHERE kind = 'usage' AND api_key_id IS NOT NULL ${scope('tenant_id')} GROUP BY api_key_id) u
             ON u.api_key_id = q.id
          WHERE TRUE ${scope('q.tenant_id')}`,
        [opts.syncMarginMs, ...ids, ...ids],
      );
      const synced = (row: TenantRow): SyncedFigures => ({ micros: safeInteger('synced_micros', row.synced_micros), syncedAt: row.synced_at, comparable: row.comparable });
      return {
        tenants: tenants.rows.map((row) => ({ kind: SubjectKind.tenant, tenantId: row.tenant_id, apiKeyId: null, active: true, ...figures(row), synced: synced(row) })),
        keys: keys.rows.map((row) => ({ kind: SubjectKind.apiKey, tenantId: row.tenant_id, apiKeyId: row.api_key_id, active: row.status === 'active', ...figures(row), synced: synced(row) })),
      };
    }, readOnlySnapshot);
  }

  /**
   * Snapshots of the given subjects of one kind (tenant ids, or API key ids), keyed by that
   * id; a subject that does not exist is left out. `settledWithinSeconds`: how far back a
   * settled row may still have its Redis settlement to come (the request record TTL).
   */
  async function snapshots(kind: SubjectKind, ids: readonly string[], settledWithinSeconds: number): Promise<Map<string, SubjectSnapshot>> {
    const result = new Map<string, SubjectSnapshot>();
    if (ids.length === 0) return result;
    const column = kind === SubjectKind.tenant ? 'tenant_id' : 'api_key_id';
    const idList = JSON.stringify(ids);
    await db.transaction(async (trx) => {
      const subjects = kind === SubjectKind.tenant
        ? await trx.raw<{ rows: Array<{ id: string; tenant_id: string; limit_micros: string | null; status: string }> }>(
            `SELECT tenant_id AS id, tenant_id, quota_limit_micros::text AS limit_micros, 'active' AS status FROM tenant_quota WHERE tenant_id = ANY(${IDS})`, [idList])
        : await trx.raw<{ rows: Array<{ id: string; tenant_id: string; limit_micros: string | null; status: string }> }>(
            `SELECT id, tenant_id, budget_micros::text AS limit_micros, status FROM api_key_quota WHERE id = ANY(${IDS})`, [idList]);
      const sums = await trx.raw<{ rows: Array<AggregateRow & { subject_id: string }> }>(
        `SELECT ${column} AS subject_id, ${AGGREGATES} FROM billing_transaction WHERE kind = 'usage' AND ${column} = ANY(${IDS}) GROUP BY ${column}`, [idList]);
      const marks = await trx.raw<{ rows: Array<{ subject_id: string; request_id: string; status: string; reserved_micros: string; amount_micros: string | null }> }>(
        `SELECT ${column} AS subject_id, request_id, status, reserved_micros::text, amount_micros::text
           FROM billing_transaction
          WHERE kind = 'usage' AND ${column} = ANY(${IDS})
            AND (status = 'pending' OR updated_at > now() - (? * interval '1 second'))
          ORDER BY billing_transaction.id`,
        [idList, settledWithinSeconds]);
      const sumOf = new Map(sums.rows.map((row) => [row.subject_id, row]));
      for (const row of subjects.rows) {
        result.set(row.id, {
          kind,
          tenantId: row.tenant_id,
          apiKeyId: kind === SubjectKind.tenant ? null : row.id,
          active: row.status === 'active',
          ...figures(sumOf.get(row.id) ?? { usage_micros: null, rows: null, settled: null }),
          limitMicros: row.limit_micros === null ? null : safeInteger('limit_micros', row.limit_micros),
          pending: [],
          recentlySettled: [],
        });
      }
      for (const row of marks.rows) {
        const snapshot = result.get(row.subject_id);
        if (!snapshot) continue;
        if (row.status === 'pending') snapshot.pending.push({ requestId: row.request_id, reservedMicros: safeInteger('reserved_micros', row.reserved_micros) });
        else snapshot.recentlySettled.push({ requestId: row.request_id, costMicros: row.status === 'committed' ? safeInteger('amount_micros', row.amount_micros) : 0 });
      }
    }, readOnlySnapshot);
    return result;
  }

  return { allSubjects, snapshots };
}

export type ConsistencyLedger = ReturnType<typeof createConsistencyLedger>;

/** Same fingerprint: no ledger row of the subject was inserted, committed or voided in between. */
export function sameFingerprint(a: LedgerFingerprint, b: LedgerFingerprint): boolean {
  return a.rows === b.rows && a.settled === b.settled;
}
