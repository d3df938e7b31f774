/**
 * Custom search attributes that make every billed request findable in the
 * Temporal Web UI by tenant, key, model, status and operation (chat, embeddings,
 * responses). Sandbox-safe. Every one must be registered on the server before a workflow
 * sets it (src/embedded/temporal.ts does for the dev server, docker-compose.yml for a cluster).
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const SEARCH_ATTRIBUTES = {
  TenantId: 'Keyword',
  ApiKeyId: 'Keyword',
  Model: 'Keyword',
  RequestStatus: 'Keyword',
  Operation: 'Keyword',
} as const;

export type SearchAttributeName = keyof typeof SEARCH_ATTRIBUTES;

export const SearchKeys = {
  tenantId: defineSearchAttributeKey('TenantId', SearchAttributeType.KEYWORD),
  apiKeyId: defineSearchAttributeKey('ApiKeyId', SearchAttributeType.KEYWORD),
  model: defineSearchAttributeKey('Model', SearchAttributeType.KEYWORD),
  requestStatus: defineSearchAttributeKey('RequestStatus', SearchAttributeType.KEYWORD),
  operation: defineSearchAttributeKey('Operation', SearchAttributeType.KEYWORD),
} as const;
