/**
 * BudgetWindows (issue 12, docs/budget-windows.md): the current calendar window of every
 * budget window cap of a request's tenant and key, their Redis counters' warm-up from the
 * ledger, and the admin view of a subject's windows.
 *
 * A window is named by a window id `<t|k>:<subject id>:<period>:<start ISO 8601 UTC>`:
 * the same id names its Redis counter (CacheKeys.budgetWindow) and is written into every
 * ledger entry reserved in it (billing_transaction.budget_windows). The admission computes
 * the ids from its clock, so at the boundary the next request simply names the next
 * window, whose counter does not exist yet and is built from the ledger (0 for a new
 * window): the window turns over at the boundary itself, to the millisecond of the
 * admitting worker's clock, with no reset job that could run late or zero fresh spend.
 */
import type { Knex } from 'knex';
import type { Redis } from '../redis/client';
import { windowBounds, type BudgetPeriod, type WindowBounds } from '../billing/budget-window-period';
import { exactInteger } from '../billing/money';
import type { BudgetWindowRepository, BudgetWindowSettings, BudgetWindowSubjectKind } from '../db/budget-window-repository';
import { CacheKeys } from '../redis/cache-keys';
import type { QuotaScripts, ReserveWindow } from '../redis/scripts';

/** A window counter is kept this long after its window ended (inspection; nothing admits against it any more). */
export const WINDOW_COUNTER_GRACE_MS = 24 * 3600 * 1000;

const SUBJECT_PREFIX: Record<BudgetWindowSubjectKind, 't' | 'k'> = { tenant: 't', api_key: 'k' };

/** The window id of the `period` window of a subject that starts at `startMs`. */
export function budgetWindowId(kind: BudgetWindowSubjectKind, subjectId: string, period: BudgetPeriod, startMs: number): string {
  return `${SUBJECT_PREFIX[kind]}:${subjectId}:${period}:${new Date(startMs).toISOString()}`;
}

/** One cap's window containing an instant. */
export interface CurrentWindow extends ReserveWindow, WindowBounds {
  period: BudgetPeriod;
  timeZone: string;
}

/** The windows containing `nowMs` of one subject's caps. */
export function currentWindowsOf(kind: BudgetWindowSubjectKind, subjectId: string, settings: BudgetWindowSettings, nowMs: number): CurrentWindow[] {
  return settings.caps.map((cap) => {
    const bounds = windowBounds(cap.period, settings.timeZone, nowMs);
    return {
      windowId: budgetWindowId(kind, subjectId, cap.period, bounds.startMs),
      limitMicros: cap.limitMicros,
      subject: kind === 'tenant' ? 'tenant' : 'key',
      period: cap.period,
      timeZone: settings.timeZone,
      ...bounds,
    };
  });
}

/** What GET shows of a window: the current one, with its spend (reservations included). */
export interface WindowUsage {
  period: BudgetPeriod;
  limitMicros: number;
  startMs: number;
  endMs: number;
  usedMicros: number;
}

export interface BudgetWindowsDeps {
  repository: Pick<BudgetWindowRepository, 'forRequest' | 'settings' | 'windowUsageSnapshot'>;
  /** For warm(), the admission's; the admin view never builds a counter. */
  scripts?: Pick<QuotaScripts, 'warmWindow'>;
  /** For the admin view's live figures; without it the view reads the ledger. */
  redis?: Pick<Redis, 'hget'>;
}

export function createBudgetWindows(deps: BudgetWindowsDeps) {
  /** The live used_micros of a window counter, or null when it is not cached. */
  async function cachedUsed(tenantId: string, windowId: string): Promise<number | null> {
    if (!deps.redis) return null;
    const raw = await deps.redis.hget(CacheKeys.budgetWindow(tenantId, windowId), 'used_micros');
    if (raw === null) return null;
    const used = exactInteger(raw);
    return Number.isNaN(used) ? null : used;
  }

  return {
    /** The current windows of a request's tenant and key (tenant first), read from PostgreSQL. */
    async forAdmission(tenantId: string, apiKeyId: string, nowMs: number): Promise<CurrentWindow[]> {
      const settings = await deps.repository.forRequest(tenantId, apiKeyId);
      return [...currentWindowsOf('tenant', tenantId, settings.tenant, nowMs), ...currentWindowsOf('api_key', apiKeyId, settings.key, nowMs)];
    },

    /**
     * Builds a missing window counter from the ledger (committed + pending of the entries that
     * name the window), marking the pending reservations' records; a no-op if it exists.
     */
    async warm(tenantId: string, window: Pick<CurrentWindow, 'windowId' | 'endMs'>): Promise<boolean> {
      if (!deps.scripts) throw new Error('BudgetWindows.warm needs the quota scripts');
      const snapshot = await deps.repository.windowUsageSnapshot(window.windowId);
      return deps.scripts.warmWindow({
        tenantId,
        windowId: window.windowId,
        usedMicros: snapshot.usageMicros,
        pending: snapshot.pending,
        expireAtMs: window.endMs + WINDOW_COUNTER_GRACE_MS,
      });
    },

    /** The current windows of a subject with their spend: live from Redis when cached, else the ledger's. */
    async usage(kind: BudgetWindowSubjectKind, subjectId: string, tenantId: string, nowMs: number): Promise<{ timeZone: string; windows: WindowUsage[] }> {
      const settings = await deps.repository.settings(kind, subjectId);
      const windows: WindowUsage[] = [];
      for (const w of currentWindowsOf(kind, subjectId, settings, nowMs)) {
        const used = (await cachedUsed(tenantId, w.windowId)) ?? (await deps.repository.windowUsageSnapshot(w.windowId)).usageMicros;
        windows.push({ period: w.period, limitMicros: w.limitMicros, startMs: w.startMs, endMs: w.endMs, usedMicros: used });
      }
      return { timeZone: settings.timeZone, windows };
    },
  };
}

export type BudgetWindows = ReturnType<typeof createBudgetWindows>;

/** Thrown when a write would leave a subject with a time zone but no window to align (`budget_timezone` alone): nothing changes. */
export class BudgetTimezoneWithoutWindowError extends Error {
  override name = 'BudgetTimezoneWithoutWindowError';

  constructor() {
    super('budget_timezone needs a budget window: give budget_period with budget_limit_micros, or budget_windows');
  }
}

/** A change of a subject's windows: caps (undefined = keep) and zone (undefined = keep). */
export interface BudgetWindowChange {
  caps?: BudgetWindowSettings['caps'];
  timeZone?: string;
}

export interface BudgetWindowAdminDeps {
  db: Pick<Knex, 'transaction'>;
  repository: Pick<BudgetWindowRepository, 'settings' | 'replace'>;
  windows: Pick<BudgetWindows, 'usage'>;
  /** @default Date.now */
  now?: () => number;
}

/** The admin side: validate and store a subject's windows, and its view (the current windows with their spend). */
export function createBudgetWindowAdmin(deps: BudgetWindowAdminDeps) {
  const now = deps.now ?? Date.now;

  async function merged(kind: BudgetWindowSubjectKind, subjectId: string, change: BudgetWindowChange): Promise<BudgetWindowSettings> {
    const current = change.caps !== undefined && change.timeZone !== undefined ? undefined : await deps.repository.settings(kind, subjectId);
    const next = { caps: change.caps ?? current!.caps, timeZone: change.timeZone ?? current!.timeZone };
    if (change.timeZone !== undefined && next.caps.length === 0) throw new BudgetTimezoneWithoutWindowError();
    return next;
  }

  return {
    /** Refuses a change that cannot be stored, before any other setting of the same request is written. */
    async check(kind: BudgetWindowSubjectKind, subjectId: string, change: BudgetWindowChange | undefined): Promise<void> {
      if (change !== undefined) await merged(kind, subjectId, change);
    },

    /** Stores the change (one transaction); a cap changed mid-window keeps the window's spend (it lives in the ledger). */
    async apply(kind: BudgetWindowSubjectKind, subjectId: string, tenantId: string, change: BudgetWindowChange | undefined): Promise<void> {
      if (change === undefined) return;
      const next = await merged(kind, subjectId, change);
      await deps.db.transaction((trx) => deps.repository.replace(trx, kind, subjectId, tenantId, next));
    },

    /** The current windows of a subject with their spend. */
    view: (kind: BudgetWindowSubjectKind, subjectId: string, tenantId: string) => deps.windows.usage(kind, subjectId, tenantId, now()),
  };
}

export type BudgetWindowAdmin = ReturnType<typeof createBudgetWindowAdmin>;
