/**
 * One workflow per budget alert (workflow id = the alert id, started through the
 * dispatcher after the crossing's transaction committed): POSTs the alert to its webhook
 * with retries and exponential backoff, and records the outcome. Visible in the Web UI
 * as type `budgetAlert` with the TenantId search attribute (and ApiKeyId for a key's).
 *
 * The retry policy comes with the input (settings of the process that raised the alert),
 * so a running alert keeps the policy it started with. A 4xx other than 408/429 is not
 * retried; any other failure is, until giveUpAfterMs has passed (schedule-to-close
 * timeout), when the alert is recorded as failed.
 */
import { ActivityFailure, ApplicationFailure, proxyActivities, TimeoutFailure, upsertSearchAttributes } from '@temporalio/workflow';
import type { createBudgetAlertActivities } from '../alerts/delivery-activities';
import type { BudgetAlertInput, BudgetAlertResult } from './budget-alert-definitions';
import { FailureType } from './failure-types';
import { SearchKeys } from './search-attributes';

type AlertActivities = ReturnType<typeof createBudgetAlertActivities>;

/** Recording the outcome is one UPDATE: retried quickly, for a long time (it must not be lost). */
const { recordBudgetAlertFailure } = proxyActivities<AlertActivities>({
  startToCloseTimeout: '10 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
});

/** Why the delivery gave up, for the record (no URL, no secret: ids and statuses only). */
function failureReason(err: unknown): string {
  if (err instanceof ActivityFailure) {
    const cause = err.cause;
    if (cause instanceof TimeoutFailure) return 'gave up: still failing when the delivery time ran out';
    if (cause instanceof ApplicationFailure) return `${cause.type ?? 'error'}: ${cause.message}`;
    if (cause) return cause.message;
  }
  return err instanceof Error ? err.message : String(err);
}

export async function budgetAlert(input: BudgetAlertInput): Promise<BudgetAlertResult> {
  if (input.apiKeyId !== null) upsertSearchAttributes([{ key: SearchKeys.apiKeyId, value: input.apiKeyId }]);
  const { delivery } = input;
  const { deliverBudgetAlert } = proxyActivities<AlertActivities>({
    // One POST plus reading the target and recording the result.
    startToCloseTimeout: delivery.attemptTimeoutMs + 10_000,
    scheduleToCloseTimeout: delivery.giveUpAfterMs,
    retry: {
      initialInterval: delivery.initialIntervalMs,
      backoffCoefficient: 2,
      maximumInterval: delivery.maximumIntervalMs,
      nonRetryableErrorTypes: [FailureType.alertWebhookRejected, FailureType.alertUndeliverable],
    },
  });
  try {
    return await deliverBudgetAlert(input);
  } catch (err) {
    const reason = failureReason(err);
    await recordBudgetAlertFailure(input.alertId, reason);
    return { alertId: input.alertId, status: 'failed', reason };
  }
}
