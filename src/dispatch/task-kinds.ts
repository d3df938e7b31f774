/**
 * The follow-up tasks the dispatcher knows (M5): each kind is the name of the workflow
 * type it starts, with the type of its one argument. A task's payload is stored in the
 * outbox (PostgreSQL, jsonb) and becomes the workflow's input: ids and figures only,
 * never a secret, a prompt or a webhook URL (those are read by the activity that needs
 * them). Type-only imports: this module is shared with workflow code.
 */
import type { BudgetAlertInput } from '../workflows/budget-alert-definitions';

export const DispatchKind = {
  /** Delivers one budget alert to its webhook (src/workflows/budget-alert.ts). */
  budgetAlert: 'budgetAlert',
} as const;
export type DispatchKind = (typeof DispatchKind)[keyof typeof DispatchKind];

/** The payload (workflow input) of each kind. */
export interface DispatchPayloads {
  budgetAlert: BudgetAlertInput;
}

/** One follow-up task: started as workflow `kind` with id `id`, once. */
export interface DispatchTask<K extends DispatchKind = DispatchKind> {
  /**
   * Deterministic: derived from what caused the task (never random), so registering or
   * sending it twice starts one workflow. It is the workflow id.
   */
  id: string;
  kind: K;
  /** Becomes the workflow's TenantId search attribute (the Web UI finds it by tenant). */
  tenantId?: string;
  payload: DispatchPayloads[K];
}
