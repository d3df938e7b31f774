/**
 * Why a billed request is refused or fails, in the billing domain's words. They know
 * nothing of HTTP: src/api/domain-errors.ts maps each to its answer in the contract.
 */
import type { AdmissionDecision } from '../workflows/definitions';

/** Thrown when the Idempotency-Key header is not 1-255 printable ASCII characters. */
export class InvalidIdempotencyKeyError extends Error {
  override name = 'InvalidIdempotencyKeyError';
  constructor() {
    super('Idempotency-Key must be 1-255 printable ASCII characters.');
  }
}

/** X-Conversation-Id is not a valid conversation id (400, nothing runs). */
export class InvalidConversationIdError extends Error {
  override name = 'InvalidConversationIdError';
  constructor() {
    super('X-Conversation-Id must be 1-128 characters of A-Z, a-z, 0-9, _ . : or -.');
  }
}

/** X-Conversation-Id names a conversation of another tenant (409, nothing runs, nothing changes). */
export class ConversationConflictError extends Error {
  override name = 'ConversationConflictError';
  constructor() {
    super('X-Conversation-Id names a conversation that belongs to another tenant: choose another id.');
  }
}

/** Thrown when the requested model has no price: a model that cannot be billed is not served. */
export class ModelNotPricedError extends Error {
  override name = 'ModelNotPricedError';
  constructor(readonly model: string) {
    super(`model ${model} has no price`);
  }
}

/** Thrown when admission refused the request: the tenant quota or the key budget cannot cover its reservation, or the key or tenant is gone. */
export class AdmissionDeniedError extends Error {
  override name = 'AdmissionDeniedError';
  constructor(readonly reason: Exclude<Extract<AdmissionDecision, { admitted: false }>['reason'], 'unavailable'>) {
    super(`admission denied: ${reason}`);
  }
}

/** Thrown when neither Redis nor PostgreSQL could admit, or Temporal could not be reached: the same Idempotency-Key may be retried. */
export class AdmissionUnavailableError extends Error {
  override name = 'AdmissionUnavailableError';
  constructor() {
    super('Admission is unavailable; retry with the same Idempotency-Key.');
  }
}

/** Thrown when an Idempotency-Key is reused with another body, or for a finished request whose output has expired. */
export class IdempotencyConflictError extends Error {
  override name = 'IdempotencyConflictError';
  constructor(readonly why: 'different_body' | 'expired') {
    super(
      why === 'different_body'
        ? 'This Idempotency-Key was already used with a different request body.'
        : 'This Idempotency-Key was already used for a completed request whose output has expired.',
    );
  }
}

/** Thrown when the upstream failed before any output reached the client. */
export class UpstreamFailedError extends Error {
  override name = 'UpstreamFailedError';
  constructor(message = 'The upstream model provider failed.') {
    super(message);
  }
}
