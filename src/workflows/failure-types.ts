/**
 * The ApplicationFailure types that cross the activity/workflow boundary. Temporal
 * matches failures by this string (retry policies' nonRetryableErrorTypes, a failed
 * run's type), never by `instanceof`, so each has one constant, used on both sides.
 * Sandbox-safe. The strings are in recorded histories: never rename one.
 */
export const FailureType = {
  /** The upstream refused the request for good (e.g. a 4xx): another attempt would fail the same way. */
  upstreamRejected: 'UpstreamRejectedError',
  /** Neither Redis nor PostgreSQL could admit: the run fails so the same request id may be started again. */
  admissionUnavailable: 'AdmissionUnavailable',
  /** The request body is not in the body store (deleted or expired): the request fails, voided, a 502 to the client. */
  requestBodyMissing: 'RequestBodyMissing',
  /** A budget-alert webhook answered a 4xx other than 408/429: retrying would get the same answer. */
  alertWebhookRejected: 'AlertWebhookRejected',
  /** A budget-alert webhook answered 5xx, 408 or 429: retried with backoff. */
  alertWebhookUnavailable: 'AlertWebhookUnavailable',
  /** A budget-alert webhook could not be reached (connection refused, timeout): retried with backoff. */
  alertWebhookUnreachable: 'AlertWebhookUnreachable',
  /** A budget alert cannot be delivered at all (no webhook URL or no signing secret any more, or the alert row is gone). */
  alertUndeliverable: 'AlertUndeliverable',
  /** The conversation cannot take this exchange (it belongs to another tenant, or the request names none): retrying cannot help. */
  conversationRefused: 'ConversationRefused',
} as const;
export type FailureType = (typeof FailureType)[keyof typeof FailureType];
