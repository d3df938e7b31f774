/** Every workflow the billing worker runs (the bundle's entry point). */
export { billedRequest } from './billed-request';
export { quotaSyncWorkflow, apiKeySyncWorkflow, reservationSweepWorkflow } from './maintenance';
export { budgetAlert } from './budget-alert';
export { drainDispatchOutbox } from './dispatch-outbox';
