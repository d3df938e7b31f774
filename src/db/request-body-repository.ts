/**
 * The body store (table request_body): the client's request body and, in relay mode
 * 'result', the relayed output, kept out of Temporal history (issue 8). Encrypted with
 * the payload codec's keys (src/codec/body-cipher.ts). A request body is written once
 * (a duplicate with the same request id keeps the first); an output is replaced by a
 * later attempt's. Deleting is idempotent.
 *
 * Memory, for bodies up to MAX_REQUEST_BODY_BYTES (32 MiB): `put` takes the plaintext from a
 * one-shot source and seals it in place (the API's request bodies come framed for it), so one
 * copy of the body waits for PostgreSQL, whose client copies it once more into its Bind
 * message (a bytea parameter is sent whole). `get` reads the row in READ_PART_BYTES pieces (one query, one row per piece:
 * PostgreSQL slices the uncompressed TOAST value), because the whole value in one field
 * would arrive as hex text twice its size and be decoded from there: 5 copies of the body
 * for one read. The pieces are decrypted into one buffer without being joined.
 */
import type { Knex } from 'knex';
import { openBody, sealBody, type FramedPlaintext } from '../codec/body-cipher';
import type { CodecKeyring } from '../codec/keyring';

export type RequestBodyKind = 'request' | 'output';

/** How long a row survives a crash that skipped its delete. */
export const REQUEST_BODY_TTL_SECONDS = 24 * 3600;

export interface PutRequestBody {
  requestId: string;
  tenantId: string;
  kind: RequestBodyKind;
  /**
   * The plaintext, or a function handing it over once (the caller then keeps no reference:
   * see the module comment). A FramedPlaintext is sealed in place: its plaintext is gone after.
   */
  body: Buffer | FramedPlaintext | (() => Buffer | FramedPlaintext);
}

/** Size of the pieces `get` reads a row in. */
const READ_PART_BYTES = 1024 * 1024;

interface PartRow {
  key_id: string;
  part: Buffer;
}

const aad = (requestId: string, kind: RequestBodyKind): string => `${kind}\n${requestId}`;

export function createRequestBodyRepository(db: Knex, keyring: CodecKeyring, opts: { ttlSeconds?: number } = {}) {
  const ttl = opts.ttlSeconds ?? REQUEST_BODY_TTL_SECONDS;
  return {
    async put(row: PutRequestBody): Promise<void> {
      // The plaintext is a temporary of this call: nothing holds it while the insert awaits.
      const sealed = sealBody(keyring, typeof row.body === 'function' ? row.body() : row.body, aad(row.requestId, row.kind));
      const insert = db('request_body').insert({
        request_id: row.requestId,
        kind: row.kind,
        tenant_id: row.tenantId,
        key_id: sealed.keyId,
        ciphertext: sealed.data,
        expires_at: db.raw(`now() + make_interval(secs => ?)`, [ttl]),
      }).onConflict(['request_id', 'kind']);
      if (row.kind === 'request') await insert.ignore();
      else await insert.merge(['key_id', 'ciphertext', 'expires_at']);
    },

    /** The plaintext body, or undefined when there is none (deleted or expired). */
    async get(requestId: string, kind: RequestBodyKind): Promise<Buffer | undefined> {
      const { rows } = await db.raw<{ rows: PartRow[] }>(
        `SELECT key_id, substring(ciphertext FROM g.start FOR :part) AS part
           FROM request_body, generate_series(1, octet_length(ciphertext), :part) AS g(start)
          WHERE request_id = :requestId AND kind = :kind
          ORDER BY g.start`,
        { part: READ_PART_BYTES, requestId, kind },
      );
      const first = rows[0];
      if (!first) return undefined;
      return openBody(keyring, { keyId: first.key_id, data: rows.map((r) => r.part) }, aad(requestId, kind));
    },

    async delete(requestId: string, kind: RequestBodyKind): Promise<void> {
      await db('request_body').where({ request_id: requestId, kind }).del();
    },

    /** Removes rows past their expiry (left by crashes); returns how many. */
    async deleteExpired(): Promise<number> {
      return db('request_body').where('expires_at', '<', db.fn.now()).del();
    },
  };
}

export type RequestBodyRepository = ReturnType<typeof createRequestBodyRepository>;
