/**
 * Errors that mean "a dependency is unreachable right now", not "this code is wrong": a
 * PostgreSQL that refuses connections or is starting up or shutting down (a restart, a
 * failover), a broken connection, a pool that cannot hand out a connection, a Redis
 * connection that is closed. The client should retry, so they are a 503 with Retry-After,
 * never a 500 internal error (found by the fault-injection soak, issue 14: a PostgreSQL
 * restart answered requests 500 "internal error" while it was starting up).
 */

/** Node's socket error codes of a connection that could not be made or was cut. */
const SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTCONN']);

/**
 * PostgreSQL SQLSTATEs of an unavailable server: class 08 (connection exception), 57P01
 * admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now (starting up, in recovery).
 */
function isUnavailableSqlState(code: string): boolean {
  return code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03';
}

/** Messages of pg, knex and ioredis for a connection that is gone (they carry no code). */
const CONNECTION_MESSAGES = [
  'Connection terminated',
  'Knex: Timeout acquiring a connection',
  'Connection is closed',
  'Client has encountered a connection error',
  "Stream isn't writeable", // ioredis without an offline queue (src/redis/client.ts) while disconnected
  'Workflow Task in failed state', // Temporal refuses updates until it retried the task of a killed worker
];

/** gRPC status codes of a Temporal server that is unreachable or too slow: UNAVAILABLE, DEADLINE_EXCEEDED. */
const GRPC_UNAVAILABLE = new Set([14, 4]);

interface ErrorLike { message: string; name?: unknown; code?: unknown; cause?: unknown; errors?: unknown }

/** Duck-typed: errors of node internals and of other realms (a test sandbox) fail `instanceof Error`. */
function isErrorLike(err: unknown): err is ErrorLike {
  return typeof err === 'object' && err !== null && typeof (err as { message?: unknown }).message === 'string';
}

/** True when `err` (or its cause) says a dependency is unreachable rather than that the request or the code is wrong. */
export function isDependencyUnavailable(err: unknown, depth = 0): boolean {
  if (!isErrorLike(err) || depth > 3) return false;
  const code = err.code;
  if (typeof code === 'string' && (SOCKET_CODES.has(code) || (/^[0-9A-Z]{5}$/.test(code) && isUnavailableSqlState(code)))) return true;
  if (err.name === 'MaxRetriesPerRequestError') return true;
  if (typeof code === 'number' && GRPC_UNAVAILABLE.has(code) && typeof (err as { details?: unknown }).details === 'string') return true;
  // includes, not startsWith: knex prefixes the statement it was running ("ROLLBACK - Connection terminated ...").
  if (CONNECTION_MESSAGES.some((m) => err.message.includes(m))) return true;
  // AggregateError (a refused connection to every address of a host) and wrapped causes.
  if (Array.isArray(err.errors) && err.errors.some((e) => isDependencyUnavailable(e, depth + 1))) return true;
  return isDependencyUnavailable(err.cause, depth + 1);
}
