/**
 * The budget-alert workflow's activities: deliver one alert to its webhook, and record
 * that delivery was given up.
 *
 * Each attempt reads the target URL and the tenant's signing secret from PostgreSQL (they
 * never enter Temporal history), builds the JSON body from the alert's row (the same
 * bytes on every attempt), signs it with a fresh timestamp and POSTs it. 2xx: delivered.
 * 4xx other than 408/429, or a redirect (not followed: the URL is the one the admin set):
 * rejected, not retried. Anything else (5xx, 408, 429, timeout, no connection) is thrown
 * for Temporal to retry with backoff. The URL and the secret are never logged.
 */
import { ApplicationFailure, Context } from '@temporalio/activity';
import type { Logger } from '../log';
import type { BillingMetrics } from '../metrics';
import type { BudgetAlertInput, BudgetAlertResult } from '../workflows/budget-alert-definitions';
import { FailureType } from '../workflows/failure-types';
import type { AlertRepository, BudgetAlertRecord } from './alert-repository';
import type { AlertSecretRepository } from './alert-secrets';
import { ALERT_ID_HEADER, DELIVERY_ATTEMPT_HEADER, SIGNATURE_HEADER, signAlertBody } from './signature';

export interface BudgetAlertActivityDeps {
  alerts: Pick<AlertRepository, 'deliveryTarget' | 'recordAttempt' | 'markDelivered' | 'markFailed'>;
  alertSecrets: Pick<AlertSecretRepository, 'read'>;
  metrics: Pick<BillingMetrics, 'budgetAlertDeliveries' | 'budgetAlertWebhookAttempts'>;
  log: Pick<Logger, 'info' | 'warn'>;
  /** Unix seconds for the signature. @default the clock */
  nowSeconds?: () => number;
}

/** The JSON a receiver gets: ids, the threshold and the figures; no secret, no prompt. */
export interface BudgetAlertBody {
  id: string;
  type: 'budget.threshold_crossed';
  tenant_id: string;
  api_key_id: string | null;
  subject: BudgetAlertRecord['subjectKind'];
  threshold_percent: number;
  used_micros: number;
  limit_micros: number;
  sequence: number;
  crossed_at: string;
}

export function alertBody(alert: BudgetAlertRecord): BudgetAlertBody {
  return {
    id: alert.alertId,
    type: 'budget.threshold_crossed',
    tenant_id: alert.tenantId,
    api_key_id: alert.apiKeyId,
    subject: alert.subjectKind,
    threshold_percent: alert.thresholdPercent,
    used_micros: alert.usedMicros,
    limit_micros: alert.limitMicros,
    sequence: alert.sequence,
    crossed_at: alert.crossedAt.toISOString(),
  };
}

/** A 4xx that another attempt would get again (408 timeout and 429 rate limit are worth retrying). */
function rejectsForGood(status: number): boolean {
  return (status >= 300 && status < 400) || (status >= 400 && status < 500 && status !== 408 && status !== 429);
}

function attemptResult(status: number): 'success' | 'client_error' | 'server_error' {
  if (status >= 200 && status < 300) return 'success';
  return rejectsForGood(status) ? 'client_error' : 'server_error';
}

export function createBudgetAlertActivities(deps: BudgetAlertActivityDeps) {
  const nowSeconds = deps.nowSeconds ?? (() => Math.floor(Date.now() / 1000));

  return {
    async deliverBudgetAlert(input: BudgetAlertInput): Promise<BudgetAlertResult> {
      const ctx = Context.current();
      const attempt = ctx.info.attempt;
      const { alertId, tenantId } = input;
      const target = await deps.alerts.deliveryTarget(alertId);
      if (!target) throw ApplicationFailure.nonRetryable(`alert ${alertId} is not recorded`, FailureType.alertUndeliverable);
      if (target.alert.status !== 'pending') {
        // A retried activity after the row was recorded (e.g. the worker died after markDelivered).
        if (target.alert.status === 'delivered') return { alertId, status: 'delivered', attempts: target.alert.attempts, httpStatus: target.alert.lastHttpStatus ?? 200 };
        throw ApplicationFailure.nonRetryable(`alert ${alertId} was already given up`, FailureType.alertUndeliverable);
      }
      if (target.webhookUrl === null) throw ApplicationFailure.nonRetryable('no webhook URL is set any more', FailureType.alertUndeliverable);
      const secret = await deps.alertSecrets.read(tenantId);
      if (secret === null) throw ApplicationFailure.nonRetryable('the tenant has no signing secret: rotate it (POST /admin/tenants/:id/alert-secret)', FailureType.alertUndeliverable);

      const body = JSON.stringify(alertBody(target.alert));
      let response: Response;
      try {
        response = await fetch(target.webhookUrl, {
          method: 'POST',
          redirect: 'manual',
          headers: {
            'Content-Type': 'application/json',
            'User-Agent': 'durable-billing-alerts/1',
            [ALERT_ID_HEADER]: alertId,
            [DELIVERY_ATTEMPT_HEADER]: String(attempt),
            [SIGNATURE_HEADER]: signAlertBody(secret, nowSeconds(), body),
          },
          body,
          signal: AbortSignal.any([AbortSignal.timeout(input.delivery.attemptTimeoutMs), ctx.cancellationSignal]),
        });
        // The answer's body is not needed; reading it frees the connection.
        await response.arrayBuffer().catch(() => undefined);
      } catch (err) {
        const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
        deps.metrics.budgetAlertWebhookAttempts.inc({ result: 'network_error' });
        await deps.alerts.recordAttempt(alertId, attempt, null, message);
        deps.log.warn({ alertId, tenantId, attempt, error: message }, 'budget alert webhook unreachable; retrying');
        throw ApplicationFailure.retryable(`webhook unreachable (${message})`, FailureType.alertWebhookUnreachable);
      }

      const { status } = response;
      const result = attemptResult(status);
      deps.metrics.budgetAlertWebhookAttempts.inc({ result });
      if (result === 'success') {
        if (await deps.alerts.markDelivered(alertId, attempt, status)) deps.metrics.budgetAlertDeliveries.inc({ outcome: 'delivered' });
        deps.log.info({ alertId, tenantId, attempt, httpStatus: status }, 'budget alert delivered');
        return { alertId, status: 'delivered', attempts: attempt, httpStatus: status };
      }
      await deps.alerts.recordAttempt(alertId, attempt, status, `webhook answered ${status}`);
      if (result === 'client_error') {
        throw ApplicationFailure.nonRetryable(`webhook answered ${status}`, FailureType.alertWebhookRejected);
      }
      deps.log.warn({ alertId, tenantId, attempt, httpStatus: status }, 'budget alert webhook failed; retrying');
      throw ApplicationFailure.retryable(`webhook answered ${status}`, FailureType.alertWebhookUnavailable);
    },

    /** Records that delivery was given up (idempotent: a recorded outcome is kept). */
    async recordBudgetAlertFailure(alertId: string, reason: string): Promise<void> {
      if (await deps.alerts.markFailed(alertId, reason)) {
        deps.metrics.budgetAlertDeliveries.inc({ outcome: 'failed' });
        deps.log.warn({ alertId, reason }, 'budget alert delivery given up');
      }
    },
  };
}
