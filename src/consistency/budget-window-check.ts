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
import type { Redis } from 'ioredis';
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
  redis: Pick<Redis, 'hmget'>;
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

  async function counter(tenantId: string, windowId: string): Promise<{ used: number; version: string } | null> {
    const [used, version] = await deps.redis.hmget(CacheKeys.budgetWindow(tenantId, windowId), 'used_micros', 'version');
    if (used === null || used === undefined) return null;
    return { used: exactInteger(used), version: version ?? '' };
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

    let checked = 0;
    const candidates: Array<{ tenantId: string; windowId: string; version: string }> = [];
    for (const w of windows) {
      const before = await counter(w.tenantId, w.windowId);
      if (before === null) continue;
      checked++;
      const ledger = (await repo.windowUsageSnapshot(w.windowId)).usageMicros;
      if (before.used !== ledger) candidates.push({ ...w, version: before.version });
    }
    if (candidates.length === 0) return { windowsChecked: checked, drifted: [] };

    await sleep(deps.confirmGraceMs);
    const drifted: WindowDrift[] = [];
    for (const c of candidates) {
      const again = await counter(c.tenantId, c.windowId);
      if (again === null || again.version !== c.version) continue; // rebuilt or moving: not confirmed
      const ledger = (await repo.windowUsageSnapshot(c.windowId)).usageMicros;
      if (again.used !== ledger) drifted.push({ tenantId: c.tenantId, windowId: c.windowId, redisMicros: again.used, ledgerMicros: ledger });
    }
    return { windowsChecked: checked, drifted };
  };
}
