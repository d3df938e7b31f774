/**
 * Custom search attributes that make every billed request findable in the
 * Temporal Web UI by tenant, key, model and status. Sandbox-safe (no imports).
 */
export const SEARCH_ATTRIBUTES = {
  TenantId: 'Keyword',
  ApiKeyId: 'Keyword',
  Model: 'Keyword',
  RequestStatus: 'Keyword',
} as const;

export type SearchAttributeName = keyof typeof SEARCH_ATTRIBUTES;
