/**
 * Exact money: amounts are integer micros (1 unit = 1,000,000 micros), stored as
 * BIGINT in PostgreSQL and integer strings in Redis. Reading one back must never
 * round: these are the shared rules for turning stored text into a number.
 */

/** The one decimal form an integer is stored in: no sign on 0, no leading zeros, no exponent. */
const CANONICAL_INTEGER = /^(0|-?[1-9]\d*)$/;

/** The integer a stored value holds, or NaN when it is not canonical integer text (or a number) within the safe range. */
export function exactInteger(value: unknown): number {
  const n = typeof value === 'number' ? value : typeof value === 'string' && CANONICAL_INTEGER.test(value) ? Number(value) : Number.NaN;
  return Number.isSafeInteger(n) ? n : Number.NaN;
}

/** What a new reservation could still take (never below 0), from Redis or the ledger alike. */
export interface RemainingBalance {
  tenantRemainingMicros: number;
  /** null = the key has no budget of its own. */
  keyRemainingMicros: number | null;
}
