/** Every workflow the billing worker runs (the bundle's entry point). */
export { billedRequest } from './billed-request';
export { budgetAlert } from './budget-alert';
export { drainDispatchOutbox } from './dispatch-outbox';
