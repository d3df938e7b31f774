/**
 * The endpoints a billed request may serve. No imports: the workflow bundle, the API and the
 * ledger's row mapping (src/db/ledger-types.ts) all read it.
 */
/**
 * Which OpenAI endpoint a billed request serves (issue 11): every operation runs the same
 * lifecycle (admission, routing, upstream call, settlement); only the upstream call and how its
 * usage is read differ. Histories recorded before carry no operation: those are chat completions.
 */
export const BilledOperation = {
  chat: 'chat',
  embeddings: 'embeddings',
  responses: 'responses',
} as const;
export type BilledOperation = (typeof BilledOperation)[keyof typeof BilledOperation];

/** The operation of a request: a workflow input without one (recorded before issue 11) is a chat completion. */
export function operationOf(input: { operation?: BilledOperation }): BilledOperation {
  return input.operation ?? BilledOperation.chat;
}

