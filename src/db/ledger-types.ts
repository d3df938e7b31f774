/**
 * The ledger's vocabulary (billing_transaction rows as the application sees them),
 * its named errors, and the checked mapping from raw pg rows. pg returns BIGINT as
 * text; money must stay exact, so every BIGINT is converted with a safe-integer
 * check instead of a silent Number() that could round.
 */
import { exactInteger, type RemainingBalance } from '../billing/money';
import { TokenSource as LedgerTokenSource } from '../billing/stream-token-accumulator';
import { BilledOperation } from '../workflows/billed-operation';

/** What a ledger row records: a billed request, or credit added to a tenant. */
export const TransactionKind = {
  usage: 'usage',
  topup: 'topup',
} as const;
export type TransactionKind = (typeof TransactionKind)[keyof typeof TransactionKind];

/** Two-phase life of a usage row (M3.4): pending at admission, then committed or voided, never both. */
export const TransactionStatus = {
  pending: 'pending',
  committed: 'committed',
  voided: 'voided',
} as const;
export type TransactionStatus = (typeof TransactionStatus)[keyof typeof TransactionStatus];

/** Where the reservation was admitted: the Redis Lua path, or the PostgreSQL fallback (M2.3). */
export const AdmissionPath = {
  redis: 'redis',
  postgres: 'postgres',
} as const;
export type AdmissionPath = (typeof AdmissionPath)[keyof typeof AdmissionPath];

/** Which priority level of token counting produced the billed numbers (M6.3); the table's CHECK lists the same values. */
export { LedgerTokenSource };

/** One billing_transaction row; money in integer micros. */
export interface LedgerEntry {
  id: number;
  requestId: string;
  tenantId: string;
  apiKeyId: string | null;
  kind: TransactionKind;
  status: TransactionStatus;
  workflowId: string | null;
  model: string | null;
  /** The endpoint a usage row billed (issue 11); null on a top-up. A usage row written before the column is `chat`. */
  operation?: BilledOperation | null;
  /** The worst-case amount admission reserved (0 for rows that never had a reservation). */
  reservedMicros: number;
  admissionPath: AdmissionPath | null;
  /** Settled cost (usage) or credited amount (topup); null while pending, 0 once voided. */
  amountMicros: number | null;
  promptTokens: number | null;
  completionTokens: number | null;
  tokenSource: LedgerTokenSource | null;
  failureReason: string | null;
  createdAt: Date;
  updatedAt: Date;
  committedAt: Date | null;
  voidedAt: Date | null;
  /**
   * The budget windows the reservation was made in (window ids, src/services/budget-windows.ts),
   * fixed at admission: settlement moves exactly these windows. [] when none (absent on
   * entries built outside the repository).
   */
  budgetWindows?: string[];
}

// Inputs and answers of BillingRepository (src/db/billing-repository.ts).

export interface PendingTransactionInput {
  requestId: string;
  tenantId: string;
  apiKeyId: string;
  workflowId: string | null;
  model: string;
  /** The endpoint billed (issue 11). @default 'chat' */
  operation?: BilledOperation;
  /** The worst-case cost admission reserved. */
  reservedMicros: number;
  admissionPath: AdmissionPath;
  promptTokens?: number;
  /** The window ids the reservation counts in (issue 12); default none. */
  budgetWindows?: readonly string[];
}

export interface CommitTransactionInput {
  requestId: string;
  amountMicros: number;
  promptTokens: number;
  completionTokens: number;
  tokenSource: LedgerTokenSource;
}

export interface RecordTransactionInput {
  requestId: string;
  tenantId: string;
  apiKeyId?: string;
  kind: TransactionKind;
  amountMicros: number;
  model?: string;
  promptTokens?: number;
  completionTokens?: number;
  tokenSource?: LedgerTokenSource;
  workflowId?: string;
}

export type FallbackReservationInput = Omit<PendingTransactionInput, 'admissionPath'> & {
  /**
   * The caps of the windows named in budgetWindows (issue 12): the fallback admits only if
   * the reservation fits each window's ledger usage; a tenant window refuses with
   * insufficient_quota, a key window with budget_exceeded.
   */
  windowLimits?: ReadonlyArray<{ windowId: string; limitMicros: number; subject: 'tenant' | 'key' }>;
};


/**
 * The fallback admission's answer, shaped like quota_check.lua's so QuotaCheckStep can
 * treat both paths alike. 'duplicate' carries the ORIGINAL reservation; the missing
 * statuses mean the tenant or an active key of that tenant does not exist.
 */
export type FallbackAdmission =
  | ({ status: 'reserved' | 'duplicate'; reservedMicros: number; entry: LedgerEntry } & RemainingBalance)
  | ({ status: 'insufficient_quota' | 'budget_exceeded' } & RemainingBalance)
  | { status: 'tenant_missing' | 'key_missing' };

export interface LedgerPage {
  data: LedgerEntry[];
  /** Opaque; pass back to get the next (older) page. null on the last page. */
  nextCursor: string | null;
}

/** The raw row as pg returns it (BIGINT columns as strings). */
export interface BillingTransactionRow {
  id: string;
  request_id: string;
  tenant_id: string;
  api_key_id: string | null;
  kind: string;
  status: string;
  workflow_id: string | null;
  model: string | null;
  operation?: string | null;
  reserved_micros: string;
  admission_path: string | null;
  amount_micros: string | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  token_source: string | null;
  failure_reason: string | null;
  created_at: Date;
  updated_at: Date;
  committed_at: Date | null;
  voided_at: Date | null;
  budget_windows?: string[];
}

/** Thrown when a BIGINT (or other integer column) read from PostgreSQL is not a safe integer: converting it would lose money. */
export class UnsafeLedgerIntegerError extends Error {
  override name = 'UnsafeLedgerIntegerError';

  constructor(
    readonly column: string,
    readonly value: unknown,
  ) {
    super(`Column ${column} holds ${String(value)}, which is not a safe integer`);
  }
}

/** Thrown when an amount or token count given to the ledger is not a non-negative safe integer (money is integer micros). */
export class InvalidLedgerAmountError extends Error {
  override name = 'InvalidLedgerAmountError';

  constructor(
    readonly field: string,
    readonly value: unknown,
  ) {
    super(`${field} must be a non-negative safe integer, got ${String(value)}`);
  }
}

/** Thrown when a ledger row needed by an operation does not exist. */
export class LedgerEntryNotFoundError extends Error {
  override name = 'LedgerEntryNotFoundError';

  constructor(readonly requestId: string) {
    super(`No ledger entry for request ${requestId}`);
  }
}

/** Thrown when a transition is not allowed from the row's status (commit a voided row, void a committed one). */
export class LedgerStateError extends Error {
  override name = 'LedgerStateError';

  constructor(
    readonly requestId: string,
    readonly status: TransactionStatus,
    readonly attempted: 'commit' | 'void',
  ) {
    super(`Cannot ${attempted} ledger entry ${requestId}: it is ${status}`);
  }
}

/**
 * Thrown when a request id is already in the ledger for another tenant or another
 * kind: answering "duplicate" would hand one tenant's entry to another.
 */
export class LedgerRequestConflictError extends Error {
  override name = 'LedgerRequestConflictError';

  constructor(
    readonly requestId: string,
    readonly existing: { tenantId: string; kind: TransactionKind },
  ) {
    super(`Request id ${requestId} already belongs to a ${existing.kind} entry of another tenant or kind`);
  }
}

/** Thrown when a listing cursor was not produced by this repository (or was tampered with). */
export class InvalidCursorError extends Error {
  override name = 'InvalidCursorError';

  constructor(readonly cursor: string) {
    super('Invalid transaction listing cursor');
  }
}

/** Largest page the ledger listing serves in one query. */
export const MAX_PAGE_SIZE = 500;

/** Thrown when a page size is not an integer between 1 and MAX_PAGE_SIZE. */
export class InvalidPageSizeError extends Error {
  override name = 'InvalidPageSizeError';

  constructor(readonly limit: unknown) {
    super(`Page size must be an integer between 1 and ${MAX_PAGE_SIZE}, got ${String(limit)}`);
  }
}

/** Converts a pg integer (BIGINT text or int4 number) to a number, refusing anything that is not exact. */
export function safeInteger(column: string, value: unknown): number {
  const n = exactInteger(value);
  if (Number.isNaN(n)) throw new UnsafeLedgerIntegerError(column, value);
  return n;
}

function nullableInteger(column: string, value: unknown): number | null {
  return value === null || value === undefined ? null : safeInteger(column, value);
}

/** Validates an amount or count on its way into the ledger. */
export function assertNonNegativeInteger(field: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new InvalidLedgerAmountError(field, value);
}

/** Thrown when a row holds a value outside the ledger's vocabulary (the table's CHECK constraints were bypassed). */
export class UnexpectedLedgerValueError extends Error {
  override name = 'UnexpectedLedgerValueError';

  constructor(
    readonly column: string,
    readonly value: unknown,
  ) {
    super(`Column ${column} holds unexpected value ${String(value)}`);
  }
}

function member<T extends string>(column: string, allowed: Record<string, T>, value: unknown): T {
  const found = Object.values(allowed).find((v) => v === value);
  if (found === undefined) throw new UnexpectedLedgerValueError(column, value);
  return found;
}

function nullableMember<T extends string>(column: string, allowed: Record<string, T>, value: unknown): T | null {
  return value === null ? null : member(column, allowed, value);
}

/** Maps a raw billing_transaction row to a LedgerEntry, checking every number and enum. */
export function toLedgerEntry(row: BillingTransactionRow): LedgerEntry {
  return {
    id: safeInteger('id', row.id),
    requestId: row.request_id,
    tenantId: row.tenant_id,
    apiKeyId: row.api_key_id,
    kind: member('kind', TransactionKind, row.kind),
    status: member('status', TransactionStatus, row.status),
    workflowId: row.workflow_id,
    model: row.model,
    operation: row.operation === null || row.operation === undefined
      ? (row.kind === TransactionKind.usage ? BilledOperation.chat : null)
      : member('operation', BilledOperation, row.operation),
    reservedMicros: safeInteger('reserved_micros', row.reserved_micros),
    admissionPath: nullableMember('admission_path', AdmissionPath, row.admission_path),
    amountMicros: nullableInteger('amount_micros', row.amount_micros),
    promptTokens: nullableInteger('prompt_tokens', row.prompt_tokens),
    completionTokens: nullableInteger('completion_tokens', row.completion_tokens),
    tokenSource: nullableMember('token_source', LedgerTokenSource, row.token_source),
    failureReason: row.failure_reason,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    committedAt: row.committed_at,
    voidedAt: row.voided_at,
    budgetWindows: row.budget_windows ?? [],
  };
}

/** Refuses to answer with (or overwrite) an entry that another tenant or another kind already owns. */
export function assertSameOwner(entry: LedgerEntry, tenantId: string, kind: TransactionKind): LedgerEntry {
  if (entry.tenantId !== tenantId || entry.kind !== kind) throw new LedgerRequestConflictError(entry.requestId, entry);
  return entry;
}
