/**
 * The billed request's steps as Temporal activities, built from their
 * dependencies (the worker passes real ones, tests may pass small fakes).
 */
import type { QuotaCheckDeps } from './quota-check-step';
import { createQuotaCheckStep } from './quota-check-step';
import { createRoutingStep, type RoutingDeps } from './routing-step';
import { createUpstreamCallStep, type UpstreamCallDeps } from './upstream-call-step';
import { createBillingStep, type BillingStepDeps } from './billing-step';

export type ActivityDeps = QuotaCheckDeps & RoutingDeps & UpstreamCallDeps & BillingStepDeps;

export const createActivities = (deps: ActivityDeps) => ({
  quotaCheckStep: createQuotaCheckStep(deps),
  routingStep: createRoutingStep(deps),
  upstreamCallStep: createUpstreamCallStep(deps),
  billingStep: createBillingStep(deps),
});
