/**
 * Local HTTP receivers standing in for the usage-export destinations, each enforcing its
 * documented dedupe rule, so "exactly once" is what the receiver's own store shows:
 * - OpenMeter: CloudEvents batches, deduplicated on (source, id);
 * - Lago: POST /api/v1/events/batch; a repeated transaction_id refuses the batch with a 422
 *   naming it `value_already_exist` (nothing of the batch is stored);
 * - Stripe: form-encoded meter events, a repeated identifier within 24 h is a 400;
 * - webhook: one signed event per POST, deduplicated on its id header (signature checked).
 * Each can fail on chosen requests: `fail` (500, nothing stored) or `acceptThenFail` (stored,
 * then 500: the answer is lost, as when a sender dies after the destination took it).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { verifyAlertSignature, SIGNATURE_HEADER } from '../../src/alerts/signature';
import { USAGE_EVENT_ID_HEADER } from '../../src/export/destinations';

export interface Receiver {
  url: string;
  /** Stored events by their dedupe key, each once. */
  store: Map<string, Record<string, unknown>>;
  /** Every event that arrived, duplicates included (the sender did resend). */
  received: number;
  requests: number;
  /** Request numbers (1-based) answered 500 without storing / after storing. */
  fail: Set<number>;
  acceptThenFail: Set<number>;
  /** While true every request is a 503 (the destination is down). */
  down: boolean;
  close(): Promise<void>;
}

type Handler = (req: http.IncomingMessage, body: string, r: Receiver) => { status: number; body?: unknown; stored?: boolean };

async function start(handle: Handler): Promise<Receiver> {
  const r: Receiver = { url: '', store: new Map(), received: 0, requests: 0, fail: new Set(), acceptThenFail: new Set(), down: false, close: () => Promise.resolve() };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      r.requests += 1;
      const n = r.requests;
      const send = (status: number, body?: unknown) => {
        res.writeHead(status, { 'Content-Type': 'application/json' }).end(body === undefined ? '' : JSON.stringify(body));
      };
      if (r.down) return send(503, { error: 'down' });
      if (r.fail.has(n)) return send(500, { error: 'injected failure' });
      const answer = handle(req, Buffer.concat(chunks).toString('utf8'), r);
      if (r.acceptThenFail.has(n)) return send(500, { error: 'injected failure after storing' });
      send(answer.status, answer.body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  r.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  r.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return r;
}

export function openMeterReceiver(): Promise<Receiver> {
  return start((req, body, r) => {
    if (req.url !== '/api/v1/events' || req.headers['content-type'] !== 'application/cloudevents-batch+json') return { status: 400, body: { error: 'bad request' } };
    const events = JSON.parse(body) as Array<Record<string, unknown>>;
    for (const e of events) {
      if (e.specversion !== '1.0' || typeof e.id !== 'string' || typeof e.source !== 'string') return { status: 400, body: { error: 'not a CloudEvent' } };
    }
    for (const e of events) {
      r.received += 1;
      const key = `${e.source as string}|${e.id as string}`;
      if (!r.store.has(key)) r.store.set(key, e);
    }
    return { status: 204 };
  });
}

export function lagoReceiver(): Promise<Receiver> {
  return start((req, body, r) => {
    if (req.url !== '/api/v1/events/batch') return { status: 404 };
    const { events } = JSON.parse(body) as { events: Array<Record<string, unknown>> };
    r.received += events.length;
    const details: Record<string, unknown> = {};
    events.forEach((e, i) => {
      if (r.store.has(e.transaction_id as string)) details[String(i)] = { transaction_id: ['value_already_exist'] };
    });
    if (Object.keys(details).length > 0) return { status: 422, body: { status: 422, error: 'Unprocessable Entity', code: 'validation_errors', error_details: details } };
    for (const e of events) r.store.set(e.transaction_id as string, e);
    return { status: 200, body: { events } };
  });
}

export const STRIPE_WINDOW_MS = 24 * 3600 * 1000;

/** `now` is the receiver's clock (a test moves it to show the window). */
export function stripeReceiver(now: () => number = Date.now): Promise<Receiver & { firstSeen: Map<string, number> }> {
  const firstSeen = new Map<string, number>();
  return start((req, body, r) => {
    if (req.url !== '/v1/billing/meter_events' || req.headers['content-type'] !== 'application/x-www-form-urlencoded') return { status: 400 };
    const form = Object.fromEntries(new URLSearchParams(body));
    r.received += 1;
    const id = form.identifier!;
    const seen = firstSeen.get(id);
    if (seen !== undefined && now() - seen < STRIPE_WINDOW_MS) {
      return { status: 400, body: { error: { type: 'invalid_request_error', code: 'resource_already_exists', message: `An event with identifier ${id} already exists.` } } };
    }
    // Past the window Stripe would take it again: counted twice. The store keeps one key per
    // identifier, so a double count shows as a second key.
    firstSeen.set(id, now());
    r.store.set(r.store.has(id) ? `${id}#again-${now()}` : id, form);
    return { status: 200, body: { object: 'billing.meter_event', identifier: id } };
  }).then((r) => Object.assign(r, { firstSeen }));
}

export function webhookReceiver(secret: string): Promise<Receiver> {
  return start((req, body, r) => {
    const check = verifyAlertSignature(secret, req.headers[SIGNATURE_HEADER.toLowerCase()] as string | undefined, body);
    if (!check.valid) return { status: 401 };
    const id = req.headers[USAGE_EVENT_ID_HEADER.toLowerCase()] as string;
    r.received += 1;
    if (!r.store.has(id)) r.store.set(id, JSON.parse(body) as Record<string, unknown>);
    return { status: 200 };
  });
}
