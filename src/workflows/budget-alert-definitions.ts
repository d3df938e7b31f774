/**
 * What the budget-alert workflow, its activities and the code that raises alerts share:
 * the workflow input, its result, the alert id rule and the delivery policy. Sandbox-safe
 * (no imports). The input carries ids and the retry policy only: the webhook URL and the
 * signing secret are read by the delivery activity from PostgreSQL, so they never enter
 * Temporal history.
 */

/** Whose money an alert is about. */
export const AlertSubjectKind = {
  tenant: 'tenant',
  apiKey: 'api_key',
} as const;
export type AlertSubjectKind = (typeof AlertSubjectKind)[keyof typeof AlertSubjectKind];

/** How a webhook delivery is retried: exponential backoff from initialIntervalMs (x2 per attempt) up to maximumIntervalMs, given up after giveUpAfterMs. */
export interface AlertDeliveryPolicy {
  initialIntervalMs: number;
  maximumIntervalMs: number;
  giveUpAfterMs: number;
  /** One POST's timeout (the activity's start-to-close bound is a little longer). */
  attemptTimeoutMs: number;
}

export interface BudgetAlertInput {
  /** = the workflow id = the X-Billing-Alert-Id header (budgetAlertId()). */
  alertId: string;
  tenantId: string;
  /** The key of a key-budget alert; null for a tenant-quota alert. */
  apiKeyId: string | null;
  subjectKind: AlertSubjectKind;
  thresholdPercent: number;
  delivery: AlertDeliveryPolicy;
}

export type BudgetAlertResult =
  | { alertId: string; status: 'delivered'; attempts: number; httpStatus: number }
  | { alertId: string; status: 'failed'; reason: string };

/**
 * One id per crossing: the subject, the threshold and the crossing's sequence number
 * (incremented each time the threshold is crossed again after a re-arm). Deterministic,
 * so a repeated dispatch starts no second workflow and the receiver dedupes on it.
 */
export function budgetAlertId(subjectKind: AlertSubjectKind, subjectId: string, thresholdPercent: number, sequence: number): string {
  return `budget-alert:${subjectKind}:${subjectId}:${thresholdPercent}:${sequence}`;
}
