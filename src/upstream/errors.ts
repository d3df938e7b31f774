/**
 * Errors of an upstream call. Each class has its own `name` because Temporal
 * turns a thrown Error into an ApplicationFailure whose `type` is that name, and
 * retry policies and workflows match on the type, not on `instanceof`.
 *
 * `retryable` says whether the same request may be sent again. It is advice
 * about the upstream only: once bytes reached our client, the caller must not
 * retry whatever this says (docs/architecture.md, UpstreamCallStep).
 */

/** The error names, for `nonRetryableErrorTypes` lists and ApplicationFailure.type matching. */
export const UpstreamErrorName = {
  Http: 'UpstreamHttpError',
  Timeout: 'UpstreamTimeoutError',
  Protocol: 'UpstreamProtocolError',
  Connection: 'UpstreamConnectionError',
  Cancelled: 'UpstreamCancelledError',
  Stream: 'UpstreamStreamError',
} as const;
export type UpstreamErrorName = (typeof UpstreamErrorName)[keyof typeof UpstreamErrorName];

/** The base of every upstream error: `retryable` is set by each subclass. */
export abstract class UpstreamCallError extends Error {
  abstract readonly retryable: boolean;
}

/** Thrown when the upstream answers with a non-2xx HTTP status. */
export class UpstreamHttpError extends UpstreamCallError {
  override name = UpstreamErrorName.Http;
  /** 5xx and 429 are worth another try; other 4xx will fail the same way again. */
  readonly retryable: boolean;
  constructor(
    readonly status: number,
    /** OpenAI `error.code`, else `error.type`, else `http_<status>`. */
    readonly code: string,
    message: string,
    /** From a `Retry-After` header, when the upstream sent one. */
    readonly retryAfterMs?: number,
  ) {
    super(`upstream HTTP ${status} (${code}): ${message}`);
    this.retryable = status >= 500 || status === 429;
  }
}

/** Thrown when the upstream did not answer (or went silent mid-stream) within the time limit. */
export class UpstreamTimeoutError extends UpstreamCallError {
  override name = UpstreamErrorName.Timeout;
  readonly retryable = true;
  constructor(
    readonly timeoutMs: number,
    readonly phase: 'response' | 'stream-idle',
  ) {
    super(
      phase === 'response'
        ? `upstream did not respond within ${timeoutMs} ms`
        : `upstream stream was silent for ${timeoutMs} ms`,
    );
  }
}

/** Thrown when the upstream's answer is not valid OpenAI protocol (bad JSON, wrong content type, no [DONE]). */
export class UpstreamProtocolError extends UpstreamCallError {
  override name = UpstreamErrorName.Protocol;
  readonly retryable = false;
}

/** Thrown when the connection failed or broke before the answer was complete. */
export class UpstreamConnectionError extends UpstreamCallError {
  override name = UpstreamErrorName.Connection;
  readonly retryable = true;
}

/** Thrown when the caller's AbortSignal cancelled the call; `cause` is the signal's reason. */
export class UpstreamCancelledError extends UpstreamCallError {
  override name = UpstreamErrorName.Cancelled;
  readonly retryable = false;
  constructor(reason: unknown) {
    super('upstream call cancelled by the caller', { cause: reason });
  }
}

/** Thrown when the upstream reports an error inside an already open stream (`data: {"error": ...}`). */
export class UpstreamStreamError extends UpstreamCallError {
  override name = UpstreamErrorName.Stream;
  readonly retryable = false;
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(`upstream stream error (${code}): ${message}`);
  }
}

/** True for every error this module throws. */
export function isUpstreamCallError(err: unknown): err is UpstreamCallError {
  return err instanceof UpstreamCallError;
}
