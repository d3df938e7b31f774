/**
 * JSON integers that survive the trip to PostgreSQL BIGINT, Redis Lua and back
 * exactly: integers only (a float is never rounded into a charge or a cap), JSON
 * numbers only (a string "10" is rejected, not coerced), within
 * Number.MAX_SAFE_INTEGER. Shared by every schema at the edge: the admin bodies
 * (money) and the OpenAI request (token caps).
 */
import { z } from 'zod';

/** A JSON integer in 0..MAX_SAFE_INTEGER (amounts in micros, prices). */
export const nonNegativeSafeInt = z.number().int().nonnegative().safe();
/** A JSON integer in 1..MAX_SAFE_INTEGER. */
export const positiveSafeInt = z.number().int().positive().safe();
