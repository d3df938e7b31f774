/**
 * What the billed request's steps share (M9.1), as typed context fields
 * (./typed-context.ts). Built once at module load, and src/roles/worker.ts imports this module,
 * so two fields claiming one key stop the worker at start-up (M9.3), before it polls. Every value is a step result, plain JSON, rebuilt the same
 * way on replay.
 */
import { contextField, TypedContextFields } from './typed-context';
import type { AdmissionDecision, SettlementResult, UpstreamOutcome } from './definitions';

export const billedRequestContext = new TypedContextFields({
  /** QuotaCheckStep's decision; the admission update answers with it. */
  admission: contextField<AdmissionDecision>('admission'),
  /** UpstreamCallStep's outcome (absent when every attempt failed); the relay-mode-result update answers with it. */
  outcome: contextField<UpstreamOutcome>('upstream.outcome'),
  /** The upstream step is over, with or without an outcome. */
  upstreamDone: contextField<boolean>('upstream.done'),
  /** BillingStep's settlement; ConversationAppendStep runs only after a committed one. */
  settlement: contextField<SettlementResult>('settlement'),
});

export const BilledRequestFields = billedRequestContext.fields;
