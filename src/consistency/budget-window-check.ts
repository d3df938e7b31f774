/**
 * The consistency check's view of budget windows (issue 12, docs/budget-windows.md).
 *
 * The main check (./consistency-check.ts) compares each tenant's and key's LIFETIME
 * counter with the ledger; windows do not change those figures (every reservation moves
 * the lifetime counters and its windows alike), so windowed subjects never show false
 * drift there. Window counters are compared here, per window: for every cap in scope, the
 * current window and the one before it (a request reserved before the boundary may still
 * be settling into it), the counter's used_micros against the ledger's usage of that
 * window id (committed + pending of the entries that name it).
 *
 * Like the main check, a difference is only a candidate: it is read again after the grace
 * period and reported as drift only if it persists while the counter's version did not
 * move (a request between Redis and the ledger differs for a moment). A window whose
 * counter is not cached is not drift: the next admission rebuilds it from the ledger.
 * Read-only: a drifted window is healed by deleting its counter (the next admission
 * rebuilds it from the ledger), which is left to the operator (docs/budget-windows.md).
 */
import type { Knex } from 'knex';
import { pipelinedByNode, type Redis } from '../redis/client';
import { windowBounds, type BudgetPeriod } from '../billing/budget-window-period';
import { exactInteger } from '../billing/money';
import { createBudgetWindowRepository, type BudgetWindowSubjectKind } from '../db/budget-window-repository';
import { CacheKeys } from '../redis/cache-keys';
import { budgetWindowId } from '../services/budget-windows';

export interface WindowDrift {
  tenantId: string;
  windowId: string;
  redisMicros: number;
  ledgerMicros: number;
}

export interface BudgetWindowCheckResult {
  /** Windows whose counter was cached and compared. */
  windowsChecked: number;
  drifted: WindowDrift[];
}

export interface BudgetWindowCheckDeps {
  db: Knex;
  redis: Redis;
  /** @default Date.now */
  now?: () => number;
  /** @default setTimeout */
  sleep?: (ms: number) => Promise<void>;
  confirmGraceMs: number;
}

interface CapRow {
  subject_kind: BudgetWindowSubjectKind;
  subject_id: string;
  tenant_id: string;
  period: BudgetPeriod;
  timezone: string;
}

export function createBudgetWindowCheck(deps: BudgetWindowCheckDeps) {
  const repo = createBudgetWindowRepository(deps.db);
  const now = deps.now ?? Date.now;
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));

  /** The counters of `windows` (null when not cached), pipelined 1,000 per round trip (per master on a cluster). */
  async function counters(windows: ReadonlyArray<{ tenantId: string; windowId: string }>): Promise<Array<{ used: number; version: string } | null>> {
    const out: Array<{ used: number; version: string } | null> = [];
    for (let i = 0; i < windows.length; i += 1000) {
      const key = (w: { tenantId: string; windowId: string }): string => CacheKeys.budgetWindow(w.tenantId, w.windowId);
      const replies = await pipelinedByNode(deps.redis, windows.slice(i, i + 1000), key, (pipeline, w) => pipeline.hmget(key(w), 'used_micros', 'version'));
      for (const [err, reply] of replies) {
        if (err) throw err;
        const [used, version] = reply as [string | null, string | null];
        out.push(used === null ? null : { used: exactInteger(used), version: version ?? '' });
      }
    }
    return out;
  }

  return async function checkBudgetWindows(scope: { tenantIds?: readonly string[] } = {}): Promise<BudgetWindowCheckResult> {
    const q = deps.db<CapRow>('budget_window').select('subject_kind', 'subject_id', 'tenant_id', 'period', 'timezone');
    const caps = scope.tenantIds ? await q.whereIn('tenant_id', [...scope.tenantIds]) : await q;
    const at = now();
    const windows: Array<{ tenantId: string; windowId: string }> = [];
    for (const cap of caps) {
      const current = windowBounds(cap.period, cap.timezone, at);
      const previous = windowBounds(cap.period, cap.timezone, current.startMs - 1);
      for (const start of [previous.startMs, current.startMs]) windows.push({ tenantId: cap.tenant_id, windowId: budgetWindowId(cap.subject_kind, cap.subject_id, cap.period, start) });
    }

    // Redis first, the ledger right after (as the main check reads).
    const readings = await counters(windows);
    const cached = windows.flatMap((w, i) => (readings[i] ? [{ ...w, ...readings[i] }] : []));
    const ledger = await repo.windowsLedgerUsage(cached.map((w) => w.windowId));
    const candidates = cached.filter((w) => w.used !== ledger.get(w.windowId));
    if (candidates.length === 0) return { windowsChecked: cached.length, drifted: [] };

    await sleep(deps.confirmGraceMs);
    const again = await counters(candidates);
    const ledgerAgain = await repo.windowsLedgerUsage(candidates.map((c) => c.windowId));
    const drifted: WindowDrift[] = [];
    for (const [i, c] of candidates.entries()) {
      const now = again[i];
      if (!now || now.version !== c.version) continue; // rebuilt or moving: not confirmed
      const ledgerMicros = ledgerAgain.get(c.windowId) ?? 0;
      if (now.used !== ledgerMicros) drifted.push({ tenantId: c.tenantId, windowId: c.windowId, redisMicros: now.used, ledgerMicros });
    }
    return { windowsChecked: cached.length, drifted };
  };
}
