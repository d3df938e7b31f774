/**
 * Custom search attributes that make every billed request findable in the
 * Temporal Web UI by tenant, key, model and status. Sandbox-safe.
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const SEARCH_ATTRIBUTES = {
  TenantId: 'Keyword',
  ApiKeyId: 'Keyword',
  Model: 'Keyword',
  RequestStatus: 'Keyword',
} as const;

export type SearchAttributeName = keyof typeof SEARCH_ATTRIBUTES;

export const SearchKeys = {
  tenantId: defineSearchAttributeKey('TenantId', SearchAttributeType.KEYWORD),
  apiKeyId: defineSearchAttributeKey('ApiKeyId', SearchAttributeType.KEYWORD),
  model: defineSearchAttributeKey('Model', SearchAttributeType.KEYWORD),
  requestStatus: defineSearchAttributeKey('RequestStatus', SearchAttributeType.KEYWORD),
} as const;
