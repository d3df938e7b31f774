/**
 * The BillingStep arguments for a swept reservation: the BilledRequestInput and the
 * upstream outcome, taken from the workflow's history when it still exists (then the
 * sweep settles exactly as the workflow would have: same price, same token counts),
 * else rebuilt from the ledger row.
 *
 * No history (never started in this namespace, or removed after its retention period):
 * the row holds tenant, key, request id, model, reservation and the prompt estimate, not
 * the price the request was admitted with. BillingStep with no upstream outcome reads
 * the relay: nothing delivered voids the reservation (a void needs no price); output
 * delivered is billed with the CURRENT price list. Why bill rather than void: the relay
 * is the same evidence of delivery that BillingStep bills from after every failed
 * upstream step, and the client did receive that output; voiding it would make what a
 * tenant pays depend on whether Temporal kept a history. The price can only differ if it
 * was changed between admission and the sweep, a window bounded by the relay's life
 * (RELAY_TTL_SECONDS after its last write: past it there is no evidence and the sweep
 * voids); a cost above the reservation is then recorded as overage like any other. Such
 * settlements are counted apart (SweepSummary.withoutHistory) and logged. A model with no
 * price at all and delivered output is not guessed at: the row stays pending, counted as
 * an error on every run, until an operator sets the price (PUT /admin/models/:model).
 */
import type { ModelPrice } from '../billing/pricing';
import { TokenSource } from '../billing/stream-token-accumulator';
import type { LedgerEntry } from '../db/ledger-types';
import type { BilledRequestInput, UpstreamOutcome, UpstreamStatus } from '../workflows/definitions';

/** Thrown when a history's start input does not belong to the ledger row (another request, tenant or key) or lacks what billing needs. */
export class HistoryInputMismatchError extends Error {
  override name = 'HistoryInputMismatchError';

  constructor(
    readonly requestId: string,
    readonly field: string,
  ) {
    super(`History input of request ${requestId} does not match its ledger row or lacks billing data (${field})`);
  }
}

/** Thrown when a history's upstream outcome is not an UpstreamOutcome. */
export class HistoryOutcomeInvalidError extends Error {
  override name = 'HistoryOutcomeInvalidError';

  constructor(
    readonly requestId: string,
    readonly field: string,
  ) {
    super(`History upstream outcome of request ${requestId} is malformed (${field})`);
  }
}

/** Thrown when a pending row has no API key or model: not a billed request's reservation, the sweeper does not guess. */
export class UnsweepableRowError extends Error {
  override name = 'UnsweepableRowError';

  constructor(
    readonly requestId: string,
    readonly missing: string,
  ) {
    super(`Pending row ${requestId} has no ${missing}`);
  }
}

/** Thrown when a reservation without history delivered output but its model has no price: it stays pending (see the module comment). */
export class SweepPriceMissingError extends Error {
  override name = 'SweepPriceMissingError';

  constructor(
    readonly requestId: string,
    readonly model: string,
  ) {
    super(`Request ${requestId} delivered output without a history, and model ${model} has no price to bill it with`);
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

const UPSTREAM_STATUSES: readonly UpstreamStatus[] = ['completed', 'client_cancelled', 'failed_after_output', 'failed_before_output'];
const TOKEN_SOURCES: readonly string[] = Object.values(TokenSource);

function isPrice(v: unknown): v is ModelPrice {
  return isRecord(v) && typeof v.model === 'string' && isCount(v.inputPriceMicrosPerMtok) && isCount(v.outputPriceMicrosPerMtok) && isCount(v.maxOutputTokens);
}

/**
 * The history's start input, checked against the row it is to settle: the same request,
 * tenant and key (a mix-up would settle someone else's reservation), and every field
 * BillingStep reads well-formed.
 */
export function inputFromHistory(value: unknown, entry: LedgerEntry): BilledRequestInput {
  const fail = (field: string): never => {
    throw new HistoryInputMismatchError(entry.requestId, field);
  };
  if (!isRecord(value)) return fail('input');
  if (value.requestId !== entry.requestId) fail('requestId');
  if (value.tenantId !== entry.tenantId) fail('tenantId');
  if (value.apiKeyId !== entry.apiKeyId) fail('apiKeyId');
  if (typeof value.model !== 'string') fail('model');
  if (!isPrice(value.price)) fail('price');
  if (!isCount(value.promptTokens)) fail('promptTokens');
  if (!isCount(value.maxOutputTokens)) fail('maxOutputTokens');
  if (!isCount(value.reservedMicros)) fail('reservedMicros');
  if (value.relayMode !== 'redis' && value.relayMode !== 'result') fail('relayMode');
  return value as unknown as BilledRequestInput;
}

/** The history's upstream outcome (null: no UpstreamCallStep completed), checked. */
export function outcomeFromHistory(value: unknown, requestId: string): UpstreamOutcome | null {
  if (value === null || value === undefined) return null;
  const fail = (field: string): never => {
    throw new HistoryOutcomeInvalidError(requestId, field);
  };
  if (!isRecord(value)) return fail('outcome');
  if (!UPSTREAM_STATUSES.includes(value.status as UpstreamStatus)) fail('status');
  if (!isCount(value.promptTokens)) fail('promptTokens');
  if (!isCount(value.completionTokens)) fail('completionTokens');
  if (!TOKEN_SOURCES.includes(value.tokenSource as string)) fail('tokenSource');
  return value as unknown as UpstreamOutcome;
}

/** A price that bills nothing: only ever used for a reservation BillingStep will void (no output delivered). */
function voidOnlyPrice(model: string): ModelPrice {
  return { model, inputPriceMicrosPerMtok: 0, outputPriceMicrosPerMtok: 0, maxOutputTokens: 1 };
}

/**
 * The minimal input rebuilt from the ledger row, for a reservation whose history is gone.
 * Relay mode 'redis', so BillingStep reads the relay for what was delivered (a request
 * admitted in relay mode 'result' has no relay: voided). `price` null = the model has no
 * price; allowed only when `delivered` is false (see the module comment).
 */
export function inputFromLedger(entry: LedgerEntry, price: ModelPrice | null, delivered: boolean): BilledRequestInput {
  if (entry.apiKeyId === null) throw new UnsweepableRowError(entry.requestId, 'api key');
  if (entry.model === null) throw new UnsweepableRowError(entry.requestId, 'model');
  if (price === null && delivered) throw new SweepPriceMissingError(entry.requestId, entry.model);
  const used = price ?? voidOnlyPrice(entry.model);
  // The ledger row names the operation (issue 11): the relay is read as that operation's output.
  const operation = entry.operation ?? 'chat';
  return {
    requestId: entry.requestId,
    tenantId: entry.tenantId,
    apiKeyId: entry.apiKeyId,
    model: entry.model,
    ...(operation === 'chat' ? {} : { operation }),
    price: { model: entry.model, inputPriceMicrosPerMtok: used.inputPriceMicrosPerMtok, outputPriceMicrosPerMtok: used.outputPriceMicrosPerMtok, maxOutputTokens: used.maxOutputTokens },
    // The tiktoken estimate admission stored: what BillingStep bills for the prompt when the relay holds no upstream usage.
    promptTokens: entry.promptTokens ?? 0,
    // An embedding has no output side: its estimate level bills no output tokens.
    maxOutputTokens: operation === 'embeddings' ? 0 : used.maxOutputTokens,
    reservedMicros: entry.reservedMicros,
    stream: true,
    includeUsage: false,
    relayMode: 'redis',
    bodyRef: { requestId: entry.requestId },
  };
}
