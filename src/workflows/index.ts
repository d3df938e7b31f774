/** Every workflow the billing worker runs (the bundle's entry point). */
export { billedRequest } from './billed-request';
export { quotaSyncWorkflow, apiKeySyncWorkflow, consistencyCheckWorkflow, reservationSweepWorkflow, outboxDrainWorkflow, usageExportWorkflow, usageExportReconcileWorkflow } from './maintenance';
export { budgetAlert } from './budget-alert';
