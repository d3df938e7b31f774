/**
 * The client's raw request body bytes, captured by express.json's `verify` hook (the
 * buffer the parser read, no copy): the chat route stores exactly these bytes in the
 * body store and hashes them for the Idempotency-Key check.
 */
import type { IncomingMessage } from 'node:http';

const rawBodies = new WeakMap<IncomingMessage, Buffer>();

/** express.json's `verify` option. */
export function captureRawBody(req: IncomingMessage, _res: unknown, buf: Buffer): void {
  rawBodies.set(req, buf);
}

/** The raw body of a request parsed by express.json with captureRawBody, else undefined. */
export function rawBodyOf(req: IncomingMessage): Buffer | undefined {
  return rawBodies.get(req);
}
