/**
 * Errors at the HTTP edge and the one middleware that renders them in the
 * OpenAI error shape: `{"error":{"message","type","code","param"?}}`.
 *
 * Handlers throw an AppError (or let zod / body-parser throw); nothing else
 * writes error responses, so every error carries the request id and no
 * database or upstream text ever reaches a client.
 */
import type { ErrorRequestHandler, RequestHandler, Response } from 'express';
import { ZodError } from 'zod';
import type { Logger } from '../log';
import { fromDomainError } from './domain-errors';

/** OpenAI's error `type` values used by this gateway. */
export const ErrorType = {
  invalidRequest: 'invalid_request_error',
  insufficientQuota: 'insufficient_quota',
  /** A rate limit on requests (per minute, or in flight) was reached, as OpenAI types it. */
  requests: 'requests',
  /** A rate limit on tokens per minute was reached. */
  tokens: 'tokens',
  server: 'server_error',
} as const;
export type ErrorType = (typeof ErrorType)[keyof typeof ErrorType];

/** Machine-readable error codes of the HTTP contract. */
export const ErrorCode = {
  invalidRequest: 'invalid_request_error',
  invalidApiKey: 'invalid_api_key',
  modelNotFound: 'model_not_found',
  notFound: 'not_found',
  conflict: 'conflict',
  requestTooLarge: 'request_too_large',
  insufficientQuota: 'insufficient_quota',
  budgetExceeded: 'budget_exceeded',
  rateLimitExceeded: 'rate_limit_exceeded',
  upstreamError: 'upstream_error',
  serviceUnavailable: 'service_unavailable',
  internalError: 'internal_error',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** The JSON body of every error response. */
export interface ErrorBody {
  error: { message: string; type: ErrorType; code: ErrorCode; param?: string };
}

export interface AppErrorOptions {
  status: number;
  type: ErrorType;
  code: ErrorCode;
  message: string;
  /** The request field at fault, e.g. `messages[0].role`. */
  param?: string;
  /** Sent as a `Retry-After` header (seconds). */
  retryAfterSeconds?: number;
  /** Sent as `retry-after-ms` (which the OpenAI SDKs honour first) and, rounded up, as `Retry-After`. */
  retryAfterMs?: number;
  /** Internal detail for logs only; never rendered to the client. */
  cause?: unknown;
}

/** Thrown when a request must end with a specific client-visible error. */
export class AppError extends Error {
  override readonly name: string = 'AppError';
  readonly status: number;
  readonly type: ErrorType;
  readonly code: ErrorCode;
  readonly param: string | undefined;
  readonly retryAfterSeconds: number | undefined;
  readonly retryAfterMs: number | undefined;

  constructor(options: AppErrorOptions) {
    super(options.message, options.cause === undefined ? undefined : { cause: options.cause });
    this.status = options.status;
    this.type = options.type;
    this.code = options.code;
    this.param = options.param;
    this.retryAfterMs = options.retryAfterMs;
    this.retryAfterSeconds = options.retryAfterSeconds ?? (options.retryAfterMs === undefined ? undefined : Math.max(1, Math.ceil(options.retryAfterMs / 1000)));
  }

  /** The response body (also usable as an SSE error event). */
  toBody(): ErrorBody {
    const error: ErrorBody['error'] = { message: this.message, type: this.type, code: this.code };
    if (this.param !== undefined) error.param = this.param;
    return { error };
  }
}

/** Thrown when the request body, query or path is invalid (400). */
export class InvalidRequestError extends AppError {
  override readonly name = 'InvalidRequestError';
  constructor(message: string, param?: string, cause?: unknown) {
    super({ status: 400, type: ErrorType.invalidRequest, code: ErrorCode.invalidRequest, message, param, cause });
  }
}

/** Thrown when the bearer API key is missing, unknown or revoked (401, as OpenAI). */
export class InvalidApiKeyError extends AppError {
  override readonly name = 'InvalidApiKeyError';
  constructor(message = 'Invalid API key provided.') {
    super({ status: 401, type: ErrorType.invalidRequest, code: ErrorCode.invalidApiKey, message });
  }
}

/** Thrown when the requested model has no price list entry (404). */
export class ModelNotFoundError extends AppError {
  override readonly name = 'ModelNotFoundError';
  constructor(model: string) {
    super({
      status: 404,
      type: ErrorType.invalidRequest,
      code: ErrorCode.modelNotFound,
      message: `The model '${model}' does not exist or you do not have access to it.`,
      param: 'model',
    });
  }
}

/** Thrown when an addressed resource (tenant, key, request, lock) does not exist (404). */
export class NotFoundError extends AppError {
  override readonly name = 'NotFoundError';
  constructor(what: string) {
    super({ status: 404, type: ErrorType.invalidRequest, code: ErrorCode.notFound, message: `${what} not found` });
  }
}

/**
 * Thrown when no route answers a method and path (404), e.g. a typo in the URL or GET on a
 * POST-only endpoint: the OpenAI shape, as every other answer, not Express's HTML page.
 */
export class UnknownRouteError extends AppError {
  override readonly name = 'UnknownRouteError';
  constructor(method: string, path: string) {
    super({ status: 404, type: ErrorType.invalidRequest, code: ErrorCode.notFound, message: `Invalid URL (${method} ${path})` });
  }
}

/** Thrown when a create or update clashes with existing state (409). */
export class ConflictError extends AppError {
  override readonly name = 'ConflictError';
  constructor(message: string) {
    super({ status: 409, type: ErrorType.invalidRequest, code: ErrorCode.conflict, message });
  }
}

/** Thrown when the body or the prompt is larger than allowed (413). */
export class RequestTooLargeError extends AppError {
  override readonly name = 'RequestTooLargeError';
  constructor(message = 'Request too large.') {
    super({ status: 413, type: ErrorType.invalidRequest, code: ErrorCode.requestTooLarge, message });
  }
}

/** Thrown when the tenant's quota cannot cover the request's reservation (429). */
export class InsufficientQuotaError extends AppError {
  override readonly name = 'InsufficientQuotaError';
  constructor(message = 'You exceeded your current quota.') {
    super({ status: 429, type: ErrorType.insufficientQuota, code: ErrorCode.insufficientQuota, message });
  }
}

/** Thrown when the API key's own budget cannot cover the request's reservation (429). */
export class BudgetExceededError extends AppError {
  override readonly name = 'BudgetExceededError';
  constructor(message = 'This API key exceeded its budget.') {
    super({ status: 429, type: ErrorType.insufficientQuota, code: ErrorCode.budgetExceeded, message });
  }
}

/** Thrown when a rate limit of the key or its tenant refuses the request (429, with when to retry). */
export class RateLimitExceededError extends AppError {
  override readonly name = 'RateLimitExceededError';
  constructor(kind: 'requests' | 'tokens', message: string, retryAfterMs: number) {
    super({ status: 429, type: kind === 'tokens' ? ErrorType.tokens : ErrorType.requests, code: ErrorCode.rateLimitExceeded, message, retryAfterMs });
  }
}

/** Thrown when the upstream LLM failed before any byte reached the client (502). */
export class UpstreamError extends AppError {
  override readonly name = 'UpstreamError';
  constructor(message = 'The upstream model provider failed.', cause?: unknown) {
    super({ status: 502, type: ErrorType.server, code: ErrorCode.upstreamError, message, cause });
  }
}

/** Thrown when a dependency (Temporal, Redis and its fallback, PostgreSQL) is unavailable (503). */
export class ServiceUnavailableError extends AppError {
  override readonly name = 'ServiceUnavailableError';
  constructor(message = 'Service temporarily unavailable.', retryAfterSeconds?: number, cause?: unknown) {
    super({ status: 503, type: ErrorType.server, code: ErrorCode.serviceUnavailable, message, retryAfterSeconds, cause });
  }
}

/** The error body-parser (express.json) throws: an http-errors object with a `type`. */
interface BodyParserError {
  type: string;
  status: number;
  expose: boolean;
  message: string;
}

function isBodyParserError(err: unknown): err is BodyParserError {
  if (!(err instanceof Error)) return false;
  const candidate = err as Error & Partial<Record<keyof BodyParserError, unknown>>;
  return typeof candidate.type === 'string' && typeof candidate.status === 'number' && typeof candidate.expose === 'boolean';
}

/** `['messages', 0, 'role']` -> `messages[0].role` (OpenAI's param notation). */
export function formatParamPath(path: ReadonlyArray<string | number>): string {
  return path.reduce<string>((acc, part) => (typeof part === 'number' ? `${acc}[${part}]` : acc ? `${acc}.${part}` : part), '');
}

/** Turns any thrown value into the AppError to render; unknown errors become a bare 500. */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  const domain = fromDomainError(err);
  if (domain) return domain;
  if (err instanceof ZodError) {
    const issue = err.issues[0];
    if (!issue) return new InvalidRequestError('Invalid request.', undefined, err);
    const param = formatParamPath(issue.path);
    return new InvalidRequestError(param ? `Invalid ${param}: ${issue.message}` : `Invalid request: ${issue.message}`, param || undefined, err);
  }
  if (isBodyParserError(err)) {
    if (err.type === 'entity.too.large') return new RequestTooLargeError('Request body too large.');
    if (err.type === 'entity.parse.failed') return new InvalidRequestError('Malformed JSON in request body.', undefined, err);
    // Other body-parser client errors (bad charset, aborted, ...) carry safe messages when `expose` is set.
    if (err.expose && err.status >= 400 && err.status < 500) {
      return new AppError({ status: err.status, type: ErrorType.invalidRequest, code: ErrorCode.invalidRequest, message: err.message, cause: err });
    }
  }
  return new AppError({ status: 500, type: ErrorType.server, code: ErrorCode.internalError, message: 'internal error', cause: err });
}

function requestIdOf(res: Response): string | undefined {
  const requestId: unknown = res.locals['requestId'];
  return typeof requestId === 'string' && requestId.length > 0 ? requestId : undefined;
}

/**
 * Mounted after every router (issue 11): a method and path no route matched, under /v1,
 * /admin or anywhere, answers a JSON 404 in the OpenAI shape. The path is echoed without its
 * query string (a query may carry what does not belong in an answer) and cut to 200 characters.
 */
export function unknownRouteHandler(): RequestHandler {
  return (req, _res, next) => {
    next(new UnknownRouteError(req.method, req.path.slice(0, 200)));
  };
}

/**
 * The Express 5 error middleware; mount it last. Logs 5xx with the request id
 * (never bodies), renders the OpenAI error shape, and sets `X-Request-Id`.
 */
export function errorMiddleware(logger: Pick<Logger, 'error' | 'warn'>): ErrorRequestHandler {
  return (err: unknown, req, res, next) => {
    const appError = toAppError(err);
    const requestId = requestIdOf(res);
    if (appError.status >= 500) {
      const fields = { requestId, method: req.method, path: req.path, status: appError.status, code: appError.code, err: appError.cause ?? appError };
      if (appError.code === ErrorCode.internalError) logger.error(fields, 'unhandled error');
      else logger.warn(fields, 'request failed');
    }
    // A started response (e.g. an SSE stream) cannot change status: let Express abort the connection.
    if (res.headersSent) {
      next(err);
      return;
    }
    if (requestId !== undefined) res.setHeader('X-Request-Id', requestId);
    if (appError.retryAfterSeconds !== undefined) res.setHeader('Retry-After', String(appError.retryAfterSeconds));
    if (appError.retryAfterMs !== undefined) res.setHeader('retry-after-ms', String(appError.retryAfterMs));
    res.status(appError.status).json(appError.toBody());
  };
}
