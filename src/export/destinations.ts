/**
 * The usage-export destinations (docs/usage-export.md): how one batch of committed usage
 * entries is sent to OpenMeter, Lago, Stripe meter events and a signed generic webhook.
 * Every event carries the entry's stable id, so a resend after a lost answer is
 * deduplicated by the destination and each entry counts exactly once there.
 *
 * A destination answers which entries it acknowledged (2xx, or its own "already have it")
 * and, when it failed, why: the exporter (./usage-exporter.ts) records the acknowledged ones
 * and leaves the rest due, so a failure mid-batch loses nothing and resends only what must.
 */
import { signAlertBody, SIGNATURE_HEADER } from '../alerts/signature';

/** One committed usage entry as it leaves (ids, tokens, model, cost; never a prompt or a key). */
export interface ExportEvent {
  ledgerId: number;
  /** The stable id every destination dedupes on (the ledger entry's request id). */
  eventId: string;
  tenantId: string;
  apiKeyId: string | null;
  model: string | null;
  promptTokens: number;
  completionTokens: number;
  costMicros: number;
  committedAt: Date;
}

export interface SendResult {
  /** Entries the destination took now. */
  delivered: number[];
  /** Entries it already had (its dedupe answered): delivered too. */
  duplicates: number[];
  /** Set when the batch (or its rest) failed: the entries not in the two lists stay due. */
  error?: string;
}

export interface ExportDestination {
  name: DestinationName;
  /** Largest batch it accepts in one call. */
  maxBatch: number;
  /**
   * Entries first sent longer ago than this and never acknowledged are not resent blindly:
   * past the destination's dedupe window a resend could count twice (Stripe: 24 h).
   */
  dedupeWindowSeconds?: number;
  /** `progress` is called after each request of a batch sent one request per event (the activity heartbeats on it). */
  send(events: ExportEvent[], progress?: () => void): Promise<SendResult>;
}

export const DESTINATION_NAMES = ['openmeter', 'lago', 'stripe', 'webhook'] as const;
export type DestinationName = (typeof DESTINATION_NAMES)[number];

export function isDestinationName(name: string): name is DestinationName {
  return (DESTINATION_NAMES as readonly string[]).includes(name);
}

/** A value for the subject of an event: the tenant, or the API key (falling back to the tenant for a keyless entry). */
export type SubjectOf = 'tenant' | 'api_key';
const subjectOf = (e: ExportEvent, by: SubjectOf): string => (by === 'api_key' ? e.apiKeyId ?? e.tenantId : e.tenantId);

const totalTokens = (e: ExportEvent): number => e.promptTokens + e.completionTokens;

interface HttpAnswer {
  status: number;
  text: string;
}

async function post(url: string, body: string, headers: Record<string, string>, timeoutMs: number): Promise<HttpAnswer> {
  const res = await fetch(url, { method: 'POST', body, headers, redirect: 'manual', signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, text: await res.text() };
}

const ok = (status: number): boolean => status >= 200 && status < 300;
const ids = (events: ExportEvent[]): number[] => events.map((e) => e.ledgerId);
/** A failure's description: the status and the start of the destination's answer; never the request, whose headers carry the credential. */
const failure = (answer: HttpAnswer): string => `HTTP ${answer.status}: ${answer.text.slice(0, 200)}`;
const thrown = (err: unknown): string => (err instanceof Error ? `${err.name}: ${err.message}` : String(err));

export interface OpenMeterSettings {
  url: string;
  token?: string;
  source: string;
  type: string;
  subject: SubjectOf;
  timeoutMs: number;
}

/**
 * OpenMeter ingests CloudEvents and dedupes on (source, id): one fixed `source`, `id` =
 * the entry id. A batch is one POST of `application/cloudevents-batch+json`.
 */
export function openMeterDestination(s: OpenMeterSettings): ExportDestination {
  return {
    name: 'openmeter',
    maxBatch: 100,
    async send(events) {
      const body = JSON.stringify(
        events.map((e) => ({
          specversion: '1.0',
          id: e.eventId,
          source: s.source,
          type: s.type,
          subject: subjectOf(e, s.subject),
          time: e.committedAt.toISOString(),
          datacontenttype: 'application/json',
          data: {
            prompt_tokens: e.promptTokens,
            completion_tokens: e.completionTokens,
            total_tokens: totalTokens(e),
            model: e.model,
            cost_micros: e.costMicros,
            tenant_id: e.tenantId,
            api_key_id: e.apiKeyId,
          },
        })),
      );
      const headers: Record<string, string> = { 'Content-Type': 'application/cloudevents-batch+json' };
      if (s.token) headers.Authorization = `Bearer ${s.token}`;
      try {
        const answer = await post(`${s.url.replace(/\/$/, '')}/api/v1/events`, body, headers, s.timeoutMs);
        return ok(answer.status) ? { delivered: ids(events), duplicates: [] } : { delivered: [], duplicates: [], error: failure(answer) };
      } catch (err) {
        return { delivered: [], duplicates: [], error: thrown(err) };
      }
    },
  };
}

export interface LagoSettings {
  url: string;
  apiKey?: string;
  /** The billable metric code. */
  code: string;
  /** Which Lago field names the customer: a subscription or a customer external id. */
  idField: 'external_subscription_id' | 'external_customer_id';
  /** What fills it: the tenant id or the API key id. */
  idFrom: SubjectOf;
  timeoutMs: number;
}

/** Which batch indexes a Lago 422 refused only because their transaction_id exists (null: some other error). */
function lagoDuplicates(text: string, size: number): Set<number> | null {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return null;
  }
  const details = (body as { error_details?: unknown } | null)?.error_details;
  if (details === null || typeof details !== 'object') return null;
  const isDup = (fields: unknown): boolean => {
    if (fields === null || typeof fields !== 'object') return false;
    const entries = Object.entries(fields as Record<string, unknown>);
    return entries.length === 1 && entries[0]![0] === 'transaction_id' && Array.isArray(entries[0]![1]) && (entries[0]![1] as unknown[]).every((c) => c === 'value_already_exist');
  };
  // A single-event answer: { transaction_id: ["value_already_exist"] }.
  if (size === 1 && isDup(details)) return new Set([0]);
  const dup = new Set<number>();
  for (const [index, fields] of Object.entries(details as Record<string, unknown>)) {
    const i = Number(index);
    if (!Number.isInteger(i) || i < 0 || i >= size || !isDup(fields)) return null;
    dup.add(i);
  }
  return dup.size > 0 ? dup : null;
}

/**
 * Lago dedupes on `transaction_id` and refuses a batch holding one it has with a 422 naming
 * each such event `value_already_exist`: those count as delivered, and the rest of the batch
 * is sent again without them.
 */
export function lagoDestination(s: LagoSettings): ExportDestination {
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (s.apiKey) headers.Authorization = `Bearer ${s.apiKey}`;
  return {
    name: 'lago',
    maxBatch: 100,
    async send(events) {
      const duplicates: number[] = [];
      let rest = events;
      try {
        while (rest.length > 0) {
          const body = JSON.stringify({
            events: rest.map((e) => ({
              transaction_id: e.eventId,
              [s.idField]: subjectOf(e, s.idFrom),
              code: s.code,
              timestamp: Math.floor(e.committedAt.getTime() / 1000),
              properties: {
                prompt_tokens: e.promptTokens,
                completion_tokens: e.completionTokens,
                total_tokens: totalTokens(e),
                model: e.model,
                cost_micros: e.costMicros,
              },
            })),
          });
          const answer = await post(`${s.url.replace(/\/$/, '')}/api/v1/events/batch`, body, headers, s.timeoutMs);
          if (ok(answer.status)) return { delivered: ids(rest), duplicates };
          const dup = answer.status === 422 ? lagoDuplicates(answer.text, rest.length) : null;
          if (dup === null) return { delivered: [], duplicates, error: failure(answer) };
          duplicates.push(...rest.filter((_, i) => dup.has(i)).map((e) => e.ledgerId));
          rest = rest.filter((_, i) => !dup.has(i));
        }
        return { delivered: [], duplicates };
      } catch (err) {
        return { delivered: [], duplicates, error: thrown(err) };
      }
    },
  };
}

export interface StripeSettings {
  url: string;
  apiKey?: string;
  eventName: string;
  /** What `payload[value]` carries. */
  value: 'cost_micros' | 'total_tokens';
  /** The Stripe customer of each tenant; a tenant the map does not name is sent as its own id. */
  customers: Readonly<Record<string, string>>;
  timeoutMs: number;
}

/** Stripe's identifier dedupe holds for at least 24 hours; a little less is the safe side. */
export const STRIPE_DEDUPE_WINDOW_SECONDS = 23 * 3600;

/** Stripe's answer to an identifier it already has (inside its window). */
function stripeDuplicate(answer: HttpAnswer): boolean {
  if (answer.status !== 400) return false;
  try {
    const err = (JSON.parse(answer.text) as { error?: { code?: string; message?: string } }).error;
    return err?.code === 'resource_already_exists' || /already exists/i.test(err?.message ?? '');
  } catch {
    return false;
  }
}

/**
 * Stripe meter events: one form-encoded POST per event (`identifier` = the entry id, also
 * the Idempotency-Key), as Stripe's v1 API takes them. An entry first sent more than
 * STRIPE_DEDUPE_WINDOW_SECONDS ago and never acknowledged is held by the exporter, not resent.
 */
export function stripeDestination(s: StripeSettings): ExportDestination {
  return {
    name: 'stripe',
    maxBatch: 50,
    dedupeWindowSeconds: STRIPE_DEDUPE_WINDOW_SECONDS,
    async send(events, progress) {
      const delivered: number[] = [];
      const duplicates: number[] = [];
      for (const e of events) {
        const form = new URLSearchParams();
        form.set('event_name', s.eventName);
        form.set('identifier', e.eventId);
        form.set('timestamp', String(Math.floor(e.committedAt.getTime() / 1000)));
        form.set('payload[stripe_customer_id]', s.customers[e.tenantId] ?? e.tenantId);
        form.set('payload[value]', String(s.value === 'total_tokens' ? totalTokens(e) : e.costMicros));
        const headers: Record<string, string> = { 'Content-Type': 'application/x-www-form-urlencoded', 'Idempotency-Key': `usage-export-${e.eventId}` };
        if (s.apiKey) headers.Authorization = `Bearer ${s.apiKey}`;
        try {
          const answer = await post(`${s.url.replace(/\/$/, '')}/v1/billing/meter_events`, form.toString(), headers, s.timeoutMs);
          if (ok(answer.status)) delivered.push(e.ledgerId);
          else if (stripeDuplicate(answer)) duplicates.push(e.ledgerId);
          else return { delivered, duplicates, error: failure(answer) };
          progress?.();
        } catch (err) {
          return { delivered, duplicates, error: thrown(err) };
        }
      }
      return { delivered, duplicates };
    },
  };
}

export interface WebhookSettings {
  url: string;
  /** The signing secret (X-Billing-Signature, the budget alerts' HMAC scheme). */
  secret: string;
  timeoutMs: number;
}

/** The header a webhook receiver dedupes on. */
export const USAGE_EVENT_ID_HEADER = 'X-Billing-Usage-Event-Id';

/** The signed generic webhook: one POST per entry, its id in USAGE_EVENT_ID_HEADER (receivers dedupe on it), signed like the budget alerts. */
export function webhookDestination(s: WebhookSettings): ExportDestination {
  return {
    name: 'webhook',
    maxBatch: 100,
    async send(events, progress) {
      const delivered: number[] = [];
      for (const e of events) {
        const body = JSON.stringify({
          id: e.eventId,
          type: 'usage.committed',
          tenant_id: e.tenantId,
          api_key_id: e.apiKeyId,
          model: e.model,
          prompt_tokens: e.promptTokens,
          completion_tokens: e.completionTokens,
          cost_micros: e.costMicros,
          committed_at: e.committedAt.toISOString(),
        });
        const headers = {
          'Content-Type': 'application/json',
          'User-Agent': 'durable-billing-usage-export/1',
          [USAGE_EVENT_ID_HEADER]: e.eventId,
          [SIGNATURE_HEADER]: signAlertBody(s.secret, Math.floor(Date.now() / 1000), body),
        };
        try {
          const answer = await post(s.url, body, headers, s.timeoutMs);
          if (!ok(answer.status)) return { delivered, duplicates: [], error: failure(answer) };
          delivered.push(e.ledgerId);
          progress?.();
        } catch (err) {
          return { delivered, duplicates: [], error: thrown(err) };
        }
      }
      return { delivered, duplicates: [] };
    },
  };
}
