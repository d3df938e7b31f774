/**
 * The one place where the billing domain's errors become answers of the HTTP
 * contract. Services and repositories throw what happened (a tenant is unknown, a
 * top-up reference is taken, admission denied); this maps each to its status, code
 * and message, so routes carry no try/catch of their own.
 */
import { InvalidCursorError } from '../db/ledger-types';
import { OverloadedError, RateLimitedError } from '../edge/edge-gate';
import { QuotaLimitOverflowError, TenantAlreadyExistsError, TenantNotFoundError } from '../db/tenant-repository';
import { ApiKeyNotFoundError, RevocationNotCachedError } from '../services/api-key-service';
import {
  AdmissionDeniedError,
  AdmissionUnavailableError,
  ConversationConflictError,
  IdempotencyConflictError,
  InvalidConversationIdError,
  InvalidIdempotencyKeyError,
  ModelNotPricedError,
  UpstreamFailedError,
} from '../services/request-errors';
import { TopUpReferenceConflictError } from '../services/tenant-service';
import { BudgetTimezoneWithoutWindowError } from '../services/budget-windows';
import { isDependencyUnavailable } from './unavailable-dependency';
import {
  type AppError,
  BudgetExceededError,
  ConflictError,
  InsufficientQuotaError,
  InvalidApiKeyError,
  InvalidRequestError,
  ModelNotFoundError,
  NotFoundError,
  RateLimitExceededError,
  ServiceUnavailableError,
  UpstreamError,
} from './errors';

function admissionDenial(err: AdmissionDeniedError): AppError {
  switch (err.reason) {
    case 'insufficient_quota':
      return new InsufficientQuotaError();
    case 'budget_exceeded':
      return new BudgetExceededError();
    default:
      // The key or its tenant vanished between authentication and admission.
      return new InvalidApiKeyError();
  }
}

function rateLimited(err: RateLimitedError): AppError {
  const limit = err.limit === null ? '' : ` (limit ${err.limit})`;
  const retry = `Please try again in ${(err.retryAfterMs / 1000).toFixed(1)} s.`;
  switch (err.kind) {
    case 'requests':
      return new RateLimitExceededError('requests', `Rate limit reached for requests per minute${limit}. ${retry}`, err.retryAfterMs);
    case 'tokens':
      return new RateLimitExceededError('tokens', `Rate limit reached for tokens per minute${limit}: this request's worst case does not fit now. ${retry}`, err.retryAfterMs);
    default:
      return new RateLimitExceededError('requests', `Rate limit reached for parallel requests${limit}: wait for one to finish. ${retry}`, err.retryAfterMs);
  }
}

/** The AppError for a known domain error, else undefined. */
export function fromDomainError(err: unknown): AppError | undefined {
  if (err instanceof InvalidIdempotencyKeyError) return new InvalidRequestError(err.message, 'Idempotency-Key');
  if (err instanceof InvalidConversationIdError) return new InvalidRequestError(err.message, 'X-Conversation-Id');
  if (err instanceof ConversationConflictError) return new ConflictError(err.message);
  if (err instanceof ModelNotPricedError) return new ModelNotFoundError(err.model);
  if (err instanceof AdmissionDeniedError) return admissionDenial(err);
  if (err instanceof AdmissionUnavailableError) return new ServiceUnavailableError(err.message, 1);
  if (err instanceof IdempotencyConflictError) return new ConflictError(err.message);
  if (err instanceof UpstreamFailedError) return new UpstreamError(err.message);
  if (err instanceof RateLimitedError) return rateLimited(err);
  if (err instanceof OverloadedError) return new ServiceUnavailableError(err.message, 1);
  if (err instanceof TenantNotFoundError) return new NotFoundError(`Tenant '${err.tenantId}'`);
  if (err instanceof TenantAlreadyExistsError) return new ConflictError(`Tenant '${err.tenantId}' already exists.`);
  if (err instanceof QuotaLimitOverflowError) {
    return new InvalidRequestError('This top-up would raise the quota limit beyond the largest exact amount.', 'amount_micros', err);
  }
  if (err instanceof TopUpReferenceConflictError) {
    return new ConflictError(
      err.creditedMicros === undefined
        ? `Reference '${err.reference}' is already used.`
        : `Reference '${err.reference}' was already used for a top-up of ${String(err.creditedMicros)} micros.`,
    );
  }
  if (err instanceof InvalidCursorError) return new InvalidRequestError('Invalid cursor: use the next_cursor of a previous page.', 'cursor', err);
  if (err instanceof ApiKeyNotFoundError) return new NotFoundError(`API key '${err.apiKeyId}'`);
  if (err instanceof BudgetTimezoneWithoutWindowError) return new InvalidRequestError(err.message, 'budget_timezone', err);
  if (err instanceof RevocationNotCachedError) {
    return new ServiceUnavailableError('The key is revoked, but the key cache could not be updated yet; retry to make revocation immediate.', 1, err);
  }
  if (isDependencyUnavailable(err)) return new ServiceUnavailableError('A billing dependency is restarting; retry with the same Idempotency-Key.', 1, err);
  return undefined;
}
