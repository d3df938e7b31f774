/**
 * The PostgreSQL fallback admission (M2.3): while Redis is unreachable, a request is
 * admitted against the ledger itself. One transaction locks the tenant row, then the
 * key row (always in that order: no deadlock), so concurrent fallback admissions of a
 * tenant run one after another and each sees the previous one's pending row in the
 * ledger sum: no overspend by races.
 */
import type { Knex } from 'knex';
import type { RemainingBalance } from '../billing/money';
import type { BillingRepositoryCore } from './billing-repository';
import {
  AdmissionPath,
  TransactionKind,
  assertNonNegativeInteger,
  assertSameOwner,
  safeInteger,
  type FallbackAdmission,
  type FallbackReservationInput,
  type LedgerEntry,
} from './ledger-types';

const nonNegative = (micros: number): number => Math.max(0, micros);

export function createFallbackAdmission(db: Knex, ledger: BillingRepositoryCore) {
  const { findRow, createPendingTransaction, tenantLedgerUsage, apiKeyLedgerSpend } = ledger;

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

  /** Admits (or refuses) one request against the ledger; a retry of an admitted request answers as before. */
  return async function reserveInLedger(input: FallbackReservationInput, trx?: Knex.Transaction): Promise<FallbackAdmission> {
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
      // Budget windows, under the same locks: every admission of the tenant waits for them.
      for (const window of input.windowLimits ?? []) {
        const row = await t('billing_transaction')
          .whereRaw('budget_windows @> ARRAY[?]::text[]', [window.windowId])
          .andWhere('kind', TransactionKind.usage)
          .first<{ micros: string } | undefined>(t.raw(`COALESCE(SUM(CASE status WHEN 'committed' THEN amount_micros WHEN 'pending' THEN reserved_micros ELSE 0 END), 0)::text AS micros`));
        const windowUsed = safeInteger('window_usage', row?.micros ?? '0');
        if (BigInt(windowUsed) + BigInt(amount) > BigInt(window.limitMicros)) {
          return { status: window.subject === 'tenant' ? 'insufficient_quota' : 'budget_exceeded', ...balance(0) };
        }
      }

      const { windowLimits: _caps, ...reservation } = input;
      const { created, entry } = await createPendingTransaction({ ...reservation, admissionPath: AdmissionPath.postgres }, t);
      if (!created) return duplicateOf(entry, input.tenantId, t);
      return { status: 'reserved', reservedMicros: amount, entry, ...balance(amount) };
    };
    return trx ? trx.transaction(admit) : db.transaction(admit);
  };
}
