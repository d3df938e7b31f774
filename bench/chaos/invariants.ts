/**
 * The invariants a soak ends with (docs/architecture.md#invariants), each checked directly
 * against what the clients received, the ledger, Redis, the synced tables, the conversation
 * store and the export destination. Every violation is listed with the ids it concerns.
 */
import type { Knex } from 'knex';
import { countTextTokens } from '../../src/billing/token-count';
import type { Redis } from '../../src/redis/client';
import { readKeyBudget, readTenantQuota } from '../../src/redis/quota-cache';
import type { Receiver } from '../../test/helpers/export-receivers';
import type { ClientRecord, Subject, SubjectSpec } from './load';
import { CHAOS_MODEL } from './system';

export interface InvariantResult {
  name: string;
  violations: string[];
  /** What was checked, for the report. */
  checked: number;
}

interface LedgerRow {
  request_id: string; tenant_id: string; api_key_id: string | null; status: string; id: string;
  reserved_micros: string; amount_micros: string | null; prompt_tokens: number | null; completion_tokens: number | null;
}

const DENIALS = new Set(['insufficient_quota', 'budget_exceeded', 'rate_limit_exceeded']);

export interface InvariantInput {
  db: Knex;
  redis: Redis;
  receiver: Receiver;
  records: readonly ClientRecord[];
  subjects: readonly Subject[];
  specs: readonly SubjectSpec[];
}

export async function checkInvariants(input: InvariantInput): Promise<InvariantResult[]> {
  const { db, redis, records, subjects, specs } = input;
  const tenantIds = [...new Set(subjects.map((s) => s.tenantId))];
  const rows = (await db('billing_transaction').whereIn('tenant_id', tenantIds).andWhere('kind', 'usage').select<LedgerRow[]>('*'));
  const byRequest = new Map(rows.map((r) => [r.request_id, r]));
  const results: InvariantResult[] = [];
  const add = (name: string, checked: number, violations: string[]): void => void results.push({ name, checked, violations });

  // Group the client's records by request id: a duplicate pair, a failed-over retry share one.
  const groups = new Map<string, ClientRecord[]>();
  for (const r of records) if (r.requestId) groups.set(r.requestId, [...(groups.get(r.requestId) ?? []), r]);

  {
    const v: string[] = [];
    for (const [id, group] of groups) {
      const row = byRequest.get(id);
      const ok = group.filter((r) => r.status === 200 && r.complete);
      const denied = group.every((r) => r.status === 429 && DENIALS.has(r.errorCode ?? ''));
      if (ok.length > 0 && row?.status !== 'committed') v.push(`${id}: answered 200 but ledger ${row?.status ?? 'has no row'}`);
      if (denied && row?.status === 'committed') v.push(`${id}: denied (${group[0]!.errorCode}) but billed`);
      // A failure the server stated, with nothing delivered: a 502 (every upstream attempt failed), or a
      // 503 to a request without Idempotency-Key (its retry is another request, so it must not bill).
      // A 503 to an idempotent request means "retry with the same key": its run may still bill.
      const statedFailure = group.every((r) => r.text === '' && (r.status === 502 || (r.status >= 500 && !r.idempotencyKey)));
      if (statedFailure && row?.status === 'committed') v.push(`${id}: answered ${group.map((r) => r.status).join('/')} with nothing delivered, but billed`);
      if (row?.status === 'pending') v.push(`${id}: still pending`);
    }
    add('every request denied (nothing billed), settled once, or voided', groups.size, v);
  }
  {
    const pending = rows.filter((r) => r.status === 'pending');
    add('no pending reservation left', rows.length, pending.map((r) => `${r.request_id} (${r.tenant_id}) pending`));
  }
  {
    const v: string[] = [];
    const ledgerUsage = (filter: (r: LedgerRow) => boolean): bigint => rows.filter(filter).reduce((s, r) =>
      s + (r.status === 'committed' ? BigInt(r.amount_micros ?? '0') : r.status === 'pending' ? BigInt(r.reserved_micros) : 0n), 0n);
    for (const t of tenantIds) {
      const ledger = ledgerUsage((r) => r.tenant_id === t);
      const live = await readTenantQuota(redis, t);
      const synced = await db('tenant_quota').where({ tenant_id: t }).first<{ used_micros: string }>('used_micros');
      if (live === null || BigInt(live.usedMicros) !== ledger || BigInt(synced?.used_micros ?? '-1') !== ledger) {
        v.push(`tenant ${t}: redis ${live?.usedMicros ?? 'missing'}, ledger ${ledger}, synced ${synced?.used_micros ?? 'missing'}`);
      }
    }
    for (const s of subjects) {
      const ledger = ledgerUsage((r) => r.api_key_id === s.apiKeyId);
      const live = await readKeyBudget(redis, s.tenantId, s.apiKeyId);
      const synced = await db('api_key_quota').where({ id: s.apiKeyId }).first<{ spent_micros: string }>('spent_micros');
      if (live === null || BigInt(live.spentMicros) !== ledger || BigInt(synced?.spent_micros ?? '-1') !== ledger) {
        v.push(`key ${s.apiKeyId}: redis ${live?.spentMicros ?? 'missing'}, ledger ${ledger}, synced ${synced?.spent_micros ?? 'missing'}`);
      }
    }
    add('per tenant and key: Redis == ledger == synced tables', tenantIds.length + subjects.length, v);
  }
  {
    const v: string[] = [];
    const overLimit = (what: string, limit: bigint, filter: (r: LedgerRow) => boolean): void => {
      const committed = rows.filter((r) => filter(r) && r.status === 'committed');
      const spent = committed.reduce((s, r) => s + BigInt(r.amount_micros!), 0n);
      const overage = committed.reduce((s, r) => s + (BigInt(r.amount_micros!) > BigInt(r.reserved_micros) ? BigInt(r.amount_micros!) - BigInt(r.reserved_micros) : 0n), 0n);
      if (spent > limit + overage) v.push(`${what}: spent ${spent} > limit ${limit} + recorded overage ${overage}`);
    };
    let checked = 0;
    for (const spec of specs) {
      overLimit(`tenant ${spec.tenantId}`, BigInt(spec.tenant.quota_limit_micros), (r) => r.tenant_id === spec.tenantId);
      checked++;
      for (const k of spec.keys) {
        if (k.budget_micros === undefined) continue;
        const subject = subjects.find((s) => s.tenantId === spec.tenantId && s.exercises === k.exercises)!;
        overLimit(`key ${subject.apiKeyId}`, BigInt(k.budget_micros), (r) => r.api_key_id === subject.apiKeyId);
        checked++;
      }
    }
    add('no tenant or key above its limit except recorded overage', checked, v);
  }
  {
    const v: string[] = [];
    let checked = 0;
    for (const [id, group] of groups) {
      if (group.length < 2) continue;
      checked++;
      const ok = group.filter((r) => r.status === 200 && r.complete);
      const texts = new Set(ok.map((r) => r.text));
      if (texts.size > 1) v.push(`${id}: ${ok.length} answers with ${texts.size} different texts`);
      if (ok.length > 0 && byRequest.get(id)?.status !== 'committed') v.push(`${id}: duplicate answered but not billed`);
    }
    add('every duplicate id billed once (one row, one answer)', checked, v);
  }
  {
    const v: string[] = [];
    let checked = 0;
    for (const r of records) {
      if (!r.requestId || r.status !== 200) continue;
      const row = byRequest.get(r.requestId);
      checked++;
      if (r.complete && r.usage) {
        if (row?.prompt_tokens !== r.usage.prompt_tokens || row?.completion_tokens !== r.usage.completion_tokens) {
          v.push(`${r.requestId}: client saw usage ${r.usage.prompt_tokens}/${r.usage.completion_tokens}, ledger ${row?.prompt_tokens}/${row?.completion_tokens} (${row?.status})`);
        }
      } else if (r.text !== '') {
        // Part of the answer arrived: at least what arrived is billed (tiktoken, as the billing counts it).
        const delivered = countTextTokens(r.text, CHAOS_MODEL);
        if (row?.status !== 'committed' || (row.completion_tokens ?? 0) < delivered) {
          v.push(`${r.requestId}: client received ${delivered} tokens, ledger ${row?.status ?? 'no row'} ${row?.completion_tokens ?? ''}`);
        }
      } else if (r.complete && r.stream) {
        v.push(`${r.requestId}: stream completed without a usage chunk`);
      }
    }
    add('every delivered token billed', checked, v);
  }
  {
    const v: string[] = [];
    const convIds = [...new Set(records.map((r) => r.conversationId).filter((c): c is string => c !== undefined))];
    const messages: Array<{ conversation_id: string; seq: number; request_id: string; part: number; role: string }> = convIds.length === 0 ? [] :
      await db('conversation_message').whereIn('conversation_id', convIds).orderBy([{ column: 'conversation_id' }, { column: 'seq' }]).select('conversation_id', 'seq', 'request_id', 'part', 'role');
    for (const c of convIds) {
      const list = messages.filter((m) => m.conversation_id === c);
      list.forEach((m, i) => { if (m.seq !== list[0]!.seq + i) v.push(`${c}: gap before seq ${m.seq}`); });
      const seen = new Set<string>();
      for (let i = 0; i < list.length; i++) {
        const m = list[i]!;
        if (i > 0 && list[i - 1]!.request_id !== m.request_id) {
          if (seen.has(m.request_id)) v.push(`${c}: messages of ${m.request_id} interleaved with another request`);
        }
        if (i > 0 && list[i - 1]!.request_id === m.request_id && list[i - 1]!.part + 1 !== m.part) v.push(`${c}: ${m.request_id} part ${m.part} out of order`);
        seen.add(m.request_id);
      }
      const stored = new Set(list.map((m) => m.request_id));
      for (const r of records.filter((x) => x.conversationId === c && x.status === 200 && x.complete && x.requestId)) {
        if (!stored.has(r.requestId!)) v.push(`${c}: completed request ${r.requestId} missing from the conversation`);
      }
      for (const id of stored) {
        if (byRequest.get(id)?.status !== 'committed') v.push(`${c}: ${id} stored but not committed`);
        const parts = list.filter((m) => m.request_id === id);
        if (parts[parts.length - 1]?.role !== 'assistant') v.push(`${c}: ${id} has no reply`);
      }
    }
    add('conversations: nothing lost, nothing interleaved', convIds.length, v);
  }
  {
    const v: string[] = [];
    const committed = rows.filter((r) => r.status === 'committed');
    const outbox: Array<{ ledger_id: string; event_id: string; cost_micros: string }> = await db('usage_export_outbox').whereIn('tenant_id', tenantIds).select('ledger_id', 'event_id', 'cost_micros');
    const outboxByLedger = new Map(outbox.map((o) => [String(o.ledger_id), o]));
    for (const r of committed) if (!outboxByLedger.has(String(r.id))) v.push(`ledger ${r.id} (${r.request_id}) committed but not in the export outbox`);
    if (outbox.length !== committed.length) v.push(`outbox has ${outbox.length} entries for ${committed.length} committed rows`);
    const undelivered: Array<{ ledger_id: string }> = await db('usage_export_delivery as d').join('usage_export_outbox as o', 'o.ledger_id', 'd.ledger_id')
      .whereIn('o.tenant_id', tenantIds).andWhere('d.destination', 'webhook').whereNull('d.delivered_at').select('d.ledger_id');
    const deliveries = await db('usage_export_delivery as d').join('usage_export_outbox as o', 'o.ledger_id', 'd.ledger_id')
      .whereIn('o.tenant_id', tenantIds).andWhere('d.destination', 'webhook').count<{ count: string }[]>('* as count');
    if (undelivered.length > 0) v.push(`${undelivered.length} webhook entries not delivered`);
    if (Number(deliveries[0]?.count ?? 0) !== outbox.length) v.push(`${deliveries[0]?.count} webhook delivery records for ${outbox.length} outbox entries`);
    for (const o of outbox) {
      const got = input.receiver.store.get(o.event_id);
      if (!got) v.push(`event ${o.event_id} never reached the destination`);
      else if (String(got.cost_micros) !== String(o.cost_micros)) v.push(`event ${o.event_id}: destination has ${String(got.cost_micros)}, outbox ${o.cost_micros}`);
    }
    add('the export outbox drained, each entry once at the destination', outbox.length, v);
  }
  return results;
}
