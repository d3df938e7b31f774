/**
 * The billing-exactness check that ends every gateway benchmark (M3.5, M12): a fast gateway
 * that bills wrongly under load is worthless. After waiting for settlements still in flight, the
 * benchmark tenant's committed usage rows must equal the 2xx responses the clients saw, no row
 * may stay pending, and the tenant's `used_micros` and the key's `spent_micros` must both equal
 * the ledger's SUM(amount_micros), compared as BigInt because money is exact.
 */
import { performance } from 'node:perf_hooks';
import { createDb } from '../../src/db/knex';
import { adminCall, BenchSetupError } from './gateway-process';

export interface BillingCheck {
  expected2xx: number;
  committed: number;
  voided: number;
  pending: number;
  committedSumMicros: string;
  tenantUsedMicros: number;
  keySpentMicros: number;
  waitedS: number;
  rowsMatch: boolean;
  usedMatches: boolean;
  spentMatches: boolean;
}

/** Waits (up to 60 s) for settlements in flight, then compares the ledger with the 2xx count and the live counters. */
export async function verifyBilling(databaseUrl: string, apiUrl: string, token: string, tenantId: string, apiKeyId: string, expected2xx: number): Promise<BillingCheck> {
  const db = createDb(databaseUrl, { max: 2 });
  const started = performance.now();
  try {
    const read = async (): Promise<{ committed: number; voided: number; pending: number; sum: string }> => {
      const result = await db.raw<{ rows: Array<{ committed: string; voided: string; pending: string; sum: string }> }>(
        `SELECT count(*) FILTER (WHERE status = 'committed') AS committed,
                count(*) FILTER (WHERE status = 'voided') AS voided,
                count(*) FILTER (WHERE status = 'pending') AS pending,
                COALESCE(SUM(amount_micros) FILTER (WHERE status = 'committed'), 0)::text AS sum
           FROM billing_transaction WHERE tenant_id = ? AND kind = 'usage'`,
        [tenantId],
      );
      const row = result.rows[0];
      if (!row) throw new BenchSetupError('ledger query returned no row');
      return { committed: Number(row.committed), voided: Number(row.voided), pending: Number(row.pending), sum: row.sum };
    };
    let ledger = await read();
    let unchangedPolls = 0;
    while (performance.now() - started < 60_000) {
      if (ledger.pending === 0 && (ledger.committed === expected2xx || unchangedPolls >= 4)) break;
      await new Promise((r) => setTimeout(r, 500));
      const next = await read();
      unchangedPolls = next.committed === ledger.committed && next.pending === ledger.pending ? unchangedPolls + 1 : 0;
      ledger = next;
    }
    const tenant = await adminCall<{ used_micros: number }>(apiUrl, token, 'GET', `/admin/tenants/${tenantId}`);
    const key = await adminCall<{ spent_micros: number }>(apiUrl, token, 'GET', `/admin/api-keys/${apiKeyId}`);
    return {
      expected2xx,
      committed: ledger.committed,
      voided: ledger.voided,
      pending: ledger.pending,
      committedSumMicros: ledger.sum,
      tenantUsedMicros: tenant.used_micros,
      keySpentMicros: key.spent_micros,
      waitedS: (performance.now() - started) / 1000,
      rowsMatch: ledger.committed === expected2xx && ledger.pending === 0,
      // BigInt: the sum of a BIGINT column comes back as text and must compare exactly.
      usedMatches: BigInt(ledger.sum) === BigInt(tenant.used_micros),
      spentMatches: BigInt(ledger.sum) === BigInt(key.spent_micros),
    };
  } finally {
    await db.destroy();
  }
}
