/**
 * Budget alerts at settlement (M13): after each settlement, the tenant's quota and the
 * key's budget are checked against their thresholds (`alert_thresholds_percent`, default
 * 80 and 100); each crossing raises one alert, delivered by the budgetAlert workflow
 * through the transaction-aware dispatcher (M5).
 *
 * Cost by case, cheapest first:
 * - neither the tenant nor the key has a webhook URL, or no threshold is reached: the
 *   figures come from the settlement's own Redis replies and the settings from a
 *   per-process cache, so no database call at all (the common case);
 * - a threshold is reached but was crossed before: one indexed read;
 * - a new crossing: one transaction that flips the state row (`WHERE NOT crossed`),
 *   records the alert and writes its outbox row; the workflow start follows the commit.
 *
 * Detection is by level, not by edge: a threshold is crossed when used (reservations of
 * requests still in flight included, as admission counts it) has reached it at a
 * settlement, whichever request moved the counter past it. So an alert missed because
 * a check failed is raised by the next settlement; and for the last settlement of a
 * tenant at its limit, a retried settlement (Redis answers 'duplicate', without figures)
 * reads the counters instead.
 *
 * Re-arming: a top-up (tenant-service) calls `rearm` in the top-up's transaction; every
 * crossed threshold that usage is below again is armed, and the next crossing raises a
 * new alert with the next sequence number.
 */
import type { Redis } from '../redis/client';
import type { Dispatcher } from '../dispatch/dispatcher';
import { DispatchKind } from '../dispatch/task-kinds';
import type { Logger } from '../log';
import type { BillingMetrics } from '../metrics';
import { readKeyBudget, readTenantQuota } from '../redis/quota-cache';
import type { SettleKeyResult, SettleTenantResult } from '../redis/script-replies';
import { AlertSubjectKind, budgetAlertId, type AlertDeliveryPolicy } from '../workflows/budget-alert-definitions';
import type { AlertRepository, AlertSubject } from './alert-repository';
import type { AlertSettings } from './alert-settings';
import { thresholdsReached } from './alert-settings';
import { createSettingsCache } from './settings-cache';

export interface BudgetAlertsDeps {
  alerts: Pick<AlertRepository, 'settings' | 'crossedAmong' | 'cross' | 'insertAlert'>;
  dispatcher: Pick<Dispatcher, 'transaction'>;
  /** Reads the counters when a retried settlement's replies carry no figures. */
  redis: Redis;
  metrics: Pick<BillingMetrics, 'budgetAlertsRaised'>;
  log: Pick<Logger, 'info' | 'warn'>;
  /** The retry policy every raised alert's delivery gets. */
  delivery: AlertDeliveryPolicy;
  /** ALERT_SETTINGS_CACHE_SECONDS in ms. @default 30_000 */
  settingsCacheMs?: number;
}

/** What one settlement moved: the replies of quota_deduct.lua and apikey_budget_deduct.lua. */
export interface SettledCounters {
  tenantId: string;
  apiKeyId: string;
  tenant: SettleTenantResult;
  key: SettleKeyResult;
}

interface Figures {
  usedMicros: number;
  limitMicros: number;
}

/** A subject whose usage has reached some thresholds. */
interface Reached extends Figures {
  subject: AlertSubject;
  apiKeyId: string | null;
  thresholds: number[];
}

export function createBudgetAlerts(deps: BudgetAlertsDeps) {
  const cache = createSettingsCache({ ttlMs: deps.settingsCacheMs ?? 30_000, load: (tenantId, apiKeyId) => deps.alerts.settings(tenantId, apiKeyId) });

  async function tenantFigures(settled: SettledCounters): Promise<Figures | undefined> {
    const reply = settled.tenant;
    if (reply.status === 'applied') return { usedMicros: reply.usedMicros, limitMicros: reply.usedMicros + reply.remainingMicros };
    if (reply.status === 'tenant_missing') return undefined;
    const cached = await readTenantQuota(deps.redis, settled.tenantId);
    return cached ? { usedMicros: cached.usedMicros, limitMicros: cached.limitMicros } : undefined;
  }

  async function keyFigures(settled: SettledCounters): Promise<Figures | undefined> {
    const reply = settled.key;
    if (reply.status === 'applied') return reply.remainingMicros === null ? undefined : { usedMicros: reply.spentMicros, limitMicros: reply.spentMicros + reply.remainingMicros };
    if (reply.status === 'key_missing') return undefined;
    const cached = await readKeyBudget(deps.redis, settled.tenantId, settled.apiKeyId);
    return cached && cached.budgetMicros !== null ? { usedMicros: cached.spentMicros, limitMicros: cached.budgetMicros } : undefined;
  }

  function reached(subject: AlertSubject, apiKeyId: string | null, settings: AlertSettings, figures: Figures | undefined): Reached | undefined {
    if (!figures) return undefined;
    const thresholds = thresholdsReached(figures.usedMicros, figures.limitMicros, settings.thresholdsPercent);
    return thresholds.length > 0 ? { subject, apiKeyId, thresholds, ...figures } : undefined;
  }

  return {
    /** Checks one settlement's counters against the thresholds and raises an alert per new crossing; returns the alert ids raised. */
    async afterSettlement(settled: SettledCounters): Promise<string[]> {
      const settings = await cache.get(settled.tenantId, settled.apiKeyId);
      if (!settings) return [];
      const { tenantId, apiKeyId } = settled;
      const candidates: Reached[] = [];
      if (settings.tenant.webhookUrl !== null) {
        const r = reached({ kind: AlertSubjectKind.tenant, id: tenantId, tenantId }, null, settings.tenant, await tenantFigures(settled));
        if (r) candidates.push(r);
      }
      // A key without a URL of its own alerts to its tenant's.
      if (settings.key && (settings.key.webhookUrl ?? settings.tenant.webhookUrl) !== null) {
        const r = reached({ kind: AlertSubjectKind.apiKey, id: apiKeyId, tenantId }, apiKeyId, settings.key, await keyFigures(settled));
        if (r) candidates.push(r);
      }
      if (candidates.length === 0) return [];

      const armed: Reached[] = [];
      for (const c of candidates) {
        const crossed = new Set(await deps.alerts.crossedAmong(c.subject, c.thresholds));
        const open = c.thresholds.filter((t) => !crossed.has(t));
        if (open.length > 0) armed.push({ ...c, thresholds: open });
      }
      if (armed.length === 0) return [];

      return deps.dispatcher.transaction(async (trx, dispatch) => {
        const raised: string[] = [];
        for (const c of armed) {
          for (const crossing of await deps.alerts.cross(trx, c.subject, c.thresholds)) {
            const alertId = budgetAlertId(c.subject.kind, c.subject.id, crossing.thresholdPercent, crossing.sequence);
            await deps.alerts.insertAlert(trx, {
              alertId,
              tenantId,
              apiKeyId: c.apiKeyId,
              subjectKind: c.subject.kind,
              subjectId: c.subject.id,
              thresholdPercent: crossing.thresholdPercent,
              sequence: crossing.sequence,
              usedMicros: c.usedMicros,
              limitMicros: c.limitMicros,
            });
            dispatch({
              id: alertId,
              kind: DispatchKind.budgetAlert,
              tenantId,
              payload: { alertId, tenantId, apiKeyId: c.apiKeyId, subjectKind: c.subject.kind, thresholdPercent: crossing.thresholdPercent, delivery: deps.delivery },
            });
            raised.push(alertId);
            deps.metrics.budgetAlertsRaised.inc({ subject: c.subject.kind });
            deps.log.info({ alertId, tenantId, apiKeyId: c.apiKeyId, thresholdPercent: crossing.thresholdPercent, usedMicros: c.usedMicros, limitMicros: c.limitMicros }, 'budget alert raised');
          }
        }
        return raised;
      });
    },
  };
}

export type BudgetAlerts = ReturnType<typeof createBudgetAlerts>;
