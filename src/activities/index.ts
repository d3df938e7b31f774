/**
 * The billed request's steps as Temporal activities, built from their
 * dependencies (the worker passes real ones, tests may pass small fakes).
 */
import { ApplicationFailure } from '@temporalio/activity';
import { FailureType } from '../workflows/failure-types';
import type { QuotaCheckDeps } from './quota-check-step';
import { createQuotaCheckStep } from './quota-check-step';
import { createRoutingStep, type RoutingDeps } from './routing-step';
import { createUpstreamCallStep, type UpstreamCallDeps } from './upstream-call-step';
import { createBillingStep, type BillingStepDeps } from './billing-step';
import { createConversationAppendStep, type ConversationAppendDeps } from './conversation-append-step';

/** Without `conversations` and `locks` (tests of the other steps), conversationAppendStep is not registered. */
export type ActivityDeps = QuotaCheckDeps & RoutingDeps & UpstreamCallDeps & BillingStepDeps & Partial<Pick<ConversationAppendDeps, 'conversations' | 'locks' | 'conversationLockWaitMs'>>;

export const createActivities = (deps: ActivityDeps) => ({
  quotaCheckStep: createQuotaCheckStep(deps),
  routingStep: createRoutingStep(deps),
  upstreamCallStep: createUpstreamCallStep(deps),
  billingStep: createBillingStep(deps),
  conversationAppendStep: deps.conversations && deps.locks
    ? createConversationAppendStep({ ...deps, conversations: deps.conversations, locks: deps.locks })
    : unavailableConversationAppend,
});

/** A worker built without the conversation store: the step fails for good (the request itself is billed already). */
function unavailableConversationAppend(): Promise<never> {
  return Promise.reject(ApplicationFailure.nonRetryable('this worker has no conversation store', FailureType.conversationRefused));
}
