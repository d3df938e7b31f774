/**
 * What client, API and workflow share about a billed request: its input, the
 * admission update, the outcome, and how its workflow id derives from the request
 * id. Sandbox-safe: type-only imports and @temporalio/workflow definitions only.
 */
import { defineUpdate } from '@temporalio/workflow';
import type { ModelPrice } from '../billing/pricing';
import type { TokenSource } from '../billing/stream-token-accumulator';
import type { AdmissionPath } from '../db/ledger-types';
import type { BilledOperation } from './billed-operation';

export { BilledOperation, operationOf } from './billed-operation';

/** How output reaches the API: a Redis Stream (normal), or the workflow result while Redis is down. */
export type RelayMode = 'redis' | 'result';

export interface BilledRequestInput {
  requestId: string;
  tenantId: string;
  apiKeyId: string;
  model: string;
  /** The endpoint served (issue 11); absent = chat (every input recorded before embeddings and responses). */
  operation?: BilledOperation;
  price: ModelPrice;
  /** tiktoken count of the prompt (the estimate's input side). */
  promptTokens: number;
  /** Output cap sent upstream, per choice; the reservation covers it for every choice. */
  maxOutputTokens: number;
  /**
   * How many choices the request asks for (OpenAI's `n`): each may run to `maxOutputTokens`,
   * so the reservation covers `choices * maxOutputTokens` (issue 11). Absent (inputs recorded
   * before): 1.
   */
  choices?: number;
  /** Worst-case cost reserved at admission. */
  reservedMicros: number;
  stream: boolean;
  includeUsage: boolean;
  relayMode: RelayMode;
  conversationId?: string;
  /**
   * Where the client's request body is: the body store (request_body, kind 'request'), under this
   * request id. The body itself never enters history (issue 8). Histories recorded before carry
   * `body` instead; replay never re-runs activities, so they still replay.
   */
  bodyRef: BodyRef;
  /** SHA-256 of the client's request body: a reused Idempotency-Key with another body is refused. */
  requestHash?: string;
}

/**
 * RoutingStep's choice (issue 10), recorded in history as the step's result: the channel to
 * call first and the fallbacks to try, in order, when one fails before its first byte. A
 * retried UpstreamCallStep gets the same decision, so it starts on the same channel. Runs
 * recorded before carry a bare channel name instead (UpstreamCallStep accepts both).
 */
export interface RouteDecision {
  channel: string;
  fallbacks: string[];
  /** Whether `channel` is the conversation's affinity (M8), not a weighted choice. */
  affinity: boolean;
}

/** A row of the body store (src/db/request-body-repository.ts): the request id is the key. */
export interface BodyRef {
  requestId: string;
}

export type AdmissionDecision =
  | { admitted: true; reservedMicros: number; path: AdmissionPath; duplicate: boolean }
  | { admitted: false; reason: 'insufficient_quota' | 'budget_exceeded' | 'tenant_missing' | 'key_missing' | 'unavailable'; path: AdmissionPath };

/** What the upstream call ended with, and the usage to bill for it. */
export type UpstreamStatus = 'completed' | 'client_cancelled' | 'failed_after_output' | 'failed_before_output';

export interface UpstreamOutcome {
  status: UpstreamStatus;
  promptTokens: number;
  completionTokens: number;
  /**
   * Token classes (issue 11, src/billing/token-classes.ts), parts of the two counts above:
   * cached prompt tokens are priced at the cached-input price; reasoning and audio tokens are
   * recorded only. Absent (outcomes recorded before, or nothing reported): 0.
   */
  cachedPromptTokens?: number;
  reasoningTokens?: number;
  audioPromptTokens?: number;
  audioCompletionTokens?: number;
  tokenSource: TokenSource;
  channel: string;
  /** Only in relay mode 'result': where the output the API sends to the client is (the body store, kind 'output'). */
  outputRef?: BodyRef;
  /** Relay mode 'result' before the body store: the output itself (histories and runs started before it). */
  relayed?: unknown[];
  error?: { status: number; message: string; type: string; code: string };
}

export const RequestStatus = {
  admitted: 'admitted',
  denied: 'denied',
  streaming: 'streaming',
  settled: 'settled',
  voided: 'voided',
  failed: 'failed',
} as const;
export type RequestStatus = (typeof RequestStatus)[keyof typeof RequestStatus];

export interface SettlementResult {
  status: 'committed' | 'voided';
  costMicros: number;
  deltaMicros: number;
}

export interface BilledRequestResult {
  requestId: string;
  status: RequestStatus;
  admission: AdmissionDecision;
  upstream?: UpstreamOutcome;
  settlement?: SettlementResult;
}

/** The admission decision, with the hash of the request it was made for. */
export type AdmissionReply = AdmissionDecision & { requestHash?: string };

/** The HTTP caller learns admission synchronously through this update (update-with-start). */
export const admissionUpdate = defineUpdate<AdmissionReply>('admissionUpdate');

/** One update id per request: a duplicate HTTP call attaches to the first admission. */
export const ADMISSION_UPDATE_ID = 'admission';

/**
 * Relay mode 'result' (Redis down at admission): the API waits for the upstream
 * outcome through this update instead of a Redis Stream. null = every attempt failed.
 */
export const upstreamOutputUpdate = defineUpdate<UpstreamOutcome | null>('upstreamOutputUpdate');

/**
 * Whether a settled request's exchange goes to its conversation (ConversationAppendStep): it named
 * one, its upstream call completed and the settlement committed, in either relay mode. In relay
 * mode 'result' (Redis was down at admission) the reply is read from the body store (the output
 * the API delivered) and the step waits out the outage for the lock, which lives in Redis (a run
 * recorded when only relay mode 'redis' appended replays as it was: the step is behind patched()).
 * BillingStep keeps the request body for the step exactly then.
 */
export function appendsToConversation(input: BilledRequestInput, outcome: Pick<UpstreamOutcome, 'status'> | null | undefined, settlement: Pick<SettlementResult, 'status'>): boolean {
  return input.conversationId !== undefined && outcome?.status === 'completed' && settlement.status === 'committed';
}

/** The most completion tokens a request may be billed for: every choice at the cap. */
export function worstCaseCompletionTokens(input: Pick<BilledRequestInput, 'maxOutputTokens' | 'choices'>): number {
  return input.maxOutputTokens * (input.choices ?? 1);
}

export function billedRequestWorkflowId(requestId: string): string {
  return `billed-request:${requestId}`;
}
