/**
 * The export outbox's write side (docs/usage-export.md): a committed usage entry becomes
 * an outbox row in the SAME transaction as its commit, so the row exists exactly when the
 * commit does. Called by the ledger (src/db/billing-repository.ts) only; the rows are read
 * by the exporter (./usage-exporter.ts).
 */
import type { Knex } from 'knex';
import type { LedgerEntry } from '../db/ledger-types';

export const EXPORT_OUTBOX = 'usage_export_outbox';

/** Inserts the outbox row of a just-committed usage entry; a second call for the same entry changes nothing. */
export async function writeExportOutbox(trx: Knex.Transaction, entry: LedgerEntry): Promise<void> {
  if (entry.kind !== 'usage' || entry.status !== 'committed') return;
  await trx(EXPORT_OUTBOX)
    .insert({
      ledger_id: entry.id,
      event_id: entry.requestId,
      tenant_id: entry.tenantId,
      api_key_id: entry.apiKeyId,
      model: entry.model,
      prompt_tokens: entry.promptTokens ?? 0,
      completion_tokens: entry.completionTokens ?? 0,
      cost_micros: entry.amountMicros ?? 0,
      committed_at: entry.committedAt ?? trx.fn.now(),
    })
    .onConflict('ledger_id')
    .ignore();
}
