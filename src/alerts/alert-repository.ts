/**
 * Budget alert records (M13): the crossing state of each (subject, threshold)
 * (budget_alert_state), the alerts raised (budget_alert), and the two reads the alert
 * path needs: a subject's settings at settlement, and a delivery's target.
 *
 * Exactly one alert per crossing comes from the state row: `cross` flips it with an
 * upsert whose update only applies `WHERE NOT crossed`, so of any number of concurrent
 * settlements that see a threshold reached, one gets the row back (and raises the
 * alert); `rearm` flips it back when usage falls below again.
 */
import type { Knex } from 'knex';
import { safeInteger } from '../db/ledger-types';
import type { AlertSubjectKind } from '../workflows/budget-alert-definitions';
import type { AlertSettings } from './alert-settings';

/** A tenant (quota) or an API key (budget), and the tenant it belongs to. */
export interface AlertSubject {
  kind: AlertSubjectKind;
  id: string;
  tenantId: string;
}

/** A threshold this call crossed, and the crossing's number (1 for the first, +1 after each re-arm). */
export interface Crossing {
  thresholdPercent: number;
  sequence: number;
}

export type AlertStatus = 'pending' | 'delivered' | 'failed';

export interface BudgetAlertRecord {
  alertId: string;
  tenantId: string;
  apiKeyId: string | null;
  subjectKind: AlertSubjectKind;
  subjectId: string;
  thresholdPercent: number;
  sequence: number;
  usedMicros: number;
  limitMicros: number;
  crossedAt: Date;
  status: AlertStatus;
  attempts: number;
  lastHttpStatus: number | null;
  lastError: string | null;
  deliveredAt: Date | null;
  failedAt: Date | null;
}

export type NewBudgetAlert = Pick<BudgetAlertRecord, 'alertId' | 'tenantId' | 'apiKeyId' | 'subjectKind' | 'subjectId' | 'thresholdPercent' | 'sequence' | 'usedMicros' | 'limitMicros'>;

/** What a settlement needs to know about a tenant and one of its keys. */
export interface SubjectSettings {
  tenant: AlertSettings;
  /** Undefined when the key is not the tenant's (or does not exist). */
  key?: AlertSettings;
}

interface AlertRow {
  alert_id: string;
  tenant_id: string;
  api_key_id: string | null;
  subject_kind: AlertSubjectKind;
  subject_id: string;
  threshold_percent: number;
  sequence: number;
  used_micros: string;
  limit_micros: string;
  crossed_at: Date;
  status: AlertStatus;
  attempts: number;
  last_http_status: number | null;
  last_error: string | null;
  delivered_at: Date | null;
  failed_at: Date | null;
}

const MAX_ERROR_LENGTH = 500;

function toRecord(row: AlertRow): BudgetAlertRecord {
  return {
    alertId: row.alert_id,
    tenantId: row.tenant_id,
    apiKeyId: row.api_key_id,
    subjectKind: row.subject_kind,
    subjectId: row.subject_id,
    thresholdPercent: row.threshold_percent,
    sequence: row.sequence,
    usedMicros: safeInteger('used_micros', row.used_micros),
    limitMicros: safeInteger('limit_micros', row.limit_micros),
    crossedAt: row.crossed_at,
    status: row.status,
    attempts: row.attempts,
    lastHttpStatus: row.last_http_status,
    lastError: row.last_error,
    deliveredAt: row.delivered_at,
    failedAt: row.failed_at,
  };
}

export function createAlertRepository(db: Knex) {
  return {
    /** The tenant's settings and, when `apiKeyId` is one of its keys, the key's; undefined for an unknown tenant. */
    async settings(tenantId: string, apiKeyId: string): Promise<SubjectSettings | undefined> {
      const row = await db('tenant_quota as t')
        .leftJoin('api_key_quota as k', function joinKey() {
          this.on('k.tenant_id', '=', 't.tenant_id').andOn('k.id', '=', db.raw('?', [apiKeyId]));
        })
        .where('t.tenant_id', tenantId)
        .first<{ tenant_url: string | null; tenant_thresholds: number[]; key_id: string | null; key_url: string | null; key_thresholds: number[] | null } | undefined>(
          't.alert_webhook_url as tenant_url',
          't.alert_thresholds_percent as tenant_thresholds',
          'k.id as key_id',
          'k.alert_webhook_url as key_url',
          'k.alert_thresholds_percent as key_thresholds',
        );
      if (!row) return undefined;
      const tenant = { webhookUrl: row.tenant_url, thresholdsPercent: row.tenant_thresholds };
      if (row.key_id === null || row.key_thresholds === null) return { tenant };
      return { tenant, key: { webhookUrl: row.key_url, thresholdsPercent: row.key_thresholds } };
    },

    /** Of `thresholds`, the ones already crossed (and not re-armed) for the subject: a read without locks, for the common case. */
    async crossedAmong(subject: AlertSubject, thresholds: readonly number[]): Promise<number[]> {
      if (thresholds.length === 0) return [];
      return (await db('budget_alert_state')
        .where({ subject_kind: subject.kind, subject_id: subject.id, crossed: true })
        .whereIn('threshold_percent', thresholds)
        .pluck('threshold_percent')) as number[];
    },

    /**
     * Marks `thresholds` crossed for the subject and returns the ones THIS call crossed,
     * with their sequence numbers: a threshold already crossed is not returned (one alert
     * per crossing, also under concurrent settlements).
     */
    async cross(trx: Knex.Transaction, subject: AlertSubject, thresholds: readonly number[]): Promise<Crossing[]> {
      if (thresholds.length === 0) return [];
      const result = await trx.raw<{ rows: Array<{ threshold_percent: number; sequence: number }> }>(
        `INSERT INTO budget_alert_state (subject_kind, subject_id, tenant_id, threshold_percent, crossed, sequence, crossed_at)
         SELECT ?, ?, ?, t, true, 1, now() FROM unnest(?::integer[]) AS t
         ON CONFLICT (subject_kind, subject_id, threshold_percent) DO UPDATE
           SET crossed = true, sequence = budget_alert_state.sequence + 1, crossed_at = now()
           WHERE NOT budget_alert_state.crossed
         RETURNING threshold_percent, sequence`,
        // A PostgreSQL array literal: knex would expand a JS array binding into a list.
        [subject.kind, subject.id, subject.tenantId, `{${thresholds.map((t) => String(Math.trunc(t))).join(',')}}`],
      );
      return result.rows.map((r) => ({ thresholdPercent: r.threshold_percent, sequence: r.sequence })).sort((a, b) => a.thresholdPercent - b.thresholdPercent);
    },

    /**
     * Re-arms every crossed threshold that `usedMicros` of `limitMicros` is below again
     * (threshold * limit > used * 100, exact in numeric); returns them. A zero limit
     * re-arms nothing.
     */
    async rearm(subject: Pick<AlertSubject, 'kind' | 'id'>, usedMicros: number, limitMicros: number, trx?: Knex.Transaction): Promise<number[]> {
      if (limitMicros <= 0) return [];
      const rows = await (trx ?? db)('budget_alert_state')
        .where({ subject_kind: subject.kind, subject_id: subject.id, crossed: true })
        .andWhereRaw('threshold_percent::numeric * ?::numeric > ?::numeric * 100', [String(limitMicros), String(usedMicros)])
        .update({ crossed: false, rearmed_at: db.fn.now() })
        .returning('threshold_percent');
      return rows.map((r: { threshold_percent: number }) => r.threshold_percent).sort((a, b) => a - b);
    },

    async insertAlert(trx: Knex.Transaction, alert: NewBudgetAlert): Promise<void> {
      await trx('budget_alert')
        .insert({
          alert_id: alert.alertId,
          tenant_id: alert.tenantId,
          api_key_id: alert.apiKeyId,
          subject_kind: alert.subjectKind,
          subject_id: alert.subjectId,
          threshold_percent: alert.thresholdPercent,
          sequence: alert.sequence,
          used_micros: String(alert.usedMicros),
          limit_micros: String(alert.limitMicros),
        })
        .onConflict('alert_id')
        .ignore();
    },

    async findAlert(alertId: string): Promise<BudgetAlertRecord | undefined> {
      const row = await db<AlertRow>('budget_alert').where({ alert_id: alertId }).first();
      return row ? toRecord(row) : undefined;
    },

    /** A tenant's alerts, oldest first (tests and ops). */
    async listAlerts(tenantId: string): Promise<BudgetAlertRecord[]> {
      const rows = await db<AlertRow>('budget_alert').where({ tenant_id: tenantId }).orderBy([{ column: 'crossed_at' }, { column: 'alert_id' }]);
      return rows.map(toRecord);
    },

    /** Where an alert goes now: the key's own URL, else its tenant's (read at each attempt, so a changed URL applies to retries). */
    async deliveryTarget(alertId: string): Promise<{ alert: BudgetAlertRecord; webhookUrl: string | null } | undefined> {
      const row = await db('budget_alert as a')
        .join('tenant_quota as t', 't.tenant_id', 'a.tenant_id')
        .leftJoin('api_key_quota as k', 'k.id', 'a.api_key_id')
        .where('a.alert_id', alertId)
        .first<(AlertRow & { tenant_url: string | null; key_url: string | null }) | undefined>('a.*', 't.alert_webhook_url as tenant_url', 'k.alert_webhook_url as key_url');
      if (!row) return undefined;
      return { alert: toRecord(row), webhookUrl: (row.subject_kind === 'api_key' ? row.key_url : null) ?? row.tenant_url };
    },

    /** Records one delivery attempt that did not succeed (its HTTP status, or null when there was no answer). */
    async recordAttempt(alertId: string, attempt: number, httpStatus: number | null, error: string): Promise<void> {
      await db('budget_alert')
        .where({ alert_id: alertId, status: 'pending' })
        .update({ attempts: db.raw('greatest(attempts, ?)', [attempt]), last_http_status: httpStatus, last_error: error.slice(0, MAX_ERROR_LENGTH) });
    },

    /** The webhook accepted the alert; false when it was already recorded delivered or failed. */
    async markDelivered(alertId: string, attempt: number, httpStatus: number): Promise<boolean> {
      const n = await db('budget_alert')
        .where({ alert_id: alertId, status: 'pending' })
        .update({ status: 'delivered', attempts: db.raw('greatest(attempts, ?)', [attempt]), last_http_status: httpStatus, delivered_at: db.fn.now() });
      return n > 0;
    },

    /** Delivery was given up; false when the alert had already ended. */
    async markFailed(alertId: string, reason: string): Promise<boolean> {
      const n = await db('budget_alert')
        .where({ alert_id: alertId, status: 'pending' })
        .update({ status: 'failed', last_error: reason.slice(0, MAX_ERROR_LENGTH), failed_at: db.fn.now() });
      return n > 0;
    },
  };
}

export type AlertRepository = ReturnType<typeof createAlertRepository>;
