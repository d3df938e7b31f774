/**
 * The rate-limit columns shared by tenant_quota and api_key_quota (rpm_limit,
 * tpm_limit, max_parallel_requests; NULL = unlimited), read and written exactly.
 */
import type { RateLimits } from '../edge/limits';
import { safeInteger } from './ledger-types';

export interface RateLimitRow {
  rpm_limit: number | null;
  tpm_limit: string | null;
  max_parallel_requests: number | null;
}

const nullable = (column: string, value: unknown): number | null => (value === null || value === undefined ? null : safeInteger(column, value));

export function toRateLimits(row: RateLimitRow): RateLimits {
  return {
    rpm: nullable('rpm_limit', row.rpm_limit),
    tpm: nullable('tpm_limit', row.tpm_limit),
    maxParallel: nullable('max_parallel_requests', row.max_parallel_requests),
  };
}

/** The columns of the limits a patch sets; an absent field is left as it is, null clears it. */
export function rateLimitColumns(patch: Partial<RateLimits>): Partial<RateLimitRow> {
  const columns: Partial<RateLimitRow> = {};
  if (patch.rpm !== undefined) columns.rpm_limit = patch.rpm;
  if (patch.tpm !== undefined) columns.tpm_limit = patch.tpm === null ? null : String(patch.tpm);
  if (patch.maxParallel !== undefined) columns.max_parallel_requests = patch.maxParallel;
  return columns;
}
