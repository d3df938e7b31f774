/**
 * The payload codec's keys: which AES-256 keys decrypt, and which one encrypts.
 * Parsed from the settings PAYLOAD_CODEC_KEYS / PAYLOAD_CODEC_KEY_ID by src/config.ts
 * (this module reads no environment itself).
 *
 *   PAYLOAD_CODEC_KEYS=2025-06:<base64 of 32 bytes>,2025-01:<base64 of 32 bytes>
 *   PAYLOAD_CODEC_KEY_ID=2025-06
 *
 * Every listed key decrypts (rotation: history written under an older key stays
 * readable); only the active one encrypts.
 */

/** An AES-256 key ring: the key ids and their 32-byte keys, and the id of the key new payloads are encrypted with. */
export interface CodecKeyring {
  readonly activeKeyId: string;
  readonly keys: ReadonlyMap<string, Buffer>;
}

export const KEY_BYTES = 32;

/** Key ids travel in payload metadata: short, printable, no separators of the setting. */
const KEY_ID = /^[A-Za-z0-9._-]{1,64}$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * The development key, used when NODE_ENV is development or test and PAYLOAD_CODEC_KEYS is
 * unset. It is public (it is in this file): it keeps history unreadable to a casual look at
 * the Web UI, nothing more. Production refuses it.
 */
export const DEVELOPMENT_KEY_ID = 'dev';
export const DEVELOPMENT_KEY_BASE64 = 'yQMkhlD31fELRF24kyjhqvzbxkNNQ2NEUVb7s68M8ek=';

export interface KeyringProblem {
  setting: 'PAYLOAD_CODEC_KEYS' | 'PAYLOAD_CODEC_KEY_ID';
  message: string;
}

export type KeyringParse = { ok: true; keyring: CodecKeyring } | { ok: false; problems: KeyringProblem[] };

/** Builds a keyring from `kid -> base64 key` entries (tests, scripts); throws on a bad key. */
export function keyringOf(entries: Readonly<Record<string, string>>, activeKeyId: string): CodecKeyring {
  const parsed = parseKeyring(Object.entries(entries).map(([id, key]) => `${id}:${key}`).join(','), activeKeyId, { production: false });
  if (!parsed.ok) throw new Error(parsed.problems.map((p) => `${p.setting}: ${p.message}`).join('; '));
  return parsed.keyring;
}

/** The development keyring (NODE_ENV development or test without PAYLOAD_CODEC_KEYS). */
export function developmentKeyring(): CodecKeyring {
  return keyringOf({ [DEVELOPMENT_KEY_ID]: DEVELOPMENT_KEY_BASE64 }, DEVELOPMENT_KEY_ID);
}

/**
 * Parses the two settings. Unset keys: the development keyring, unless `production`.
 * Unset active id: the only key when there is one; with several it must be named.
 */
export function parseKeyring(keysSetting: string | undefined, activeSetting: string | undefined, opts: { production: boolean }): KeyringParse {
  const keysText = keysSetting?.trim() ?? '';
  const active = activeSetting?.trim() ?? '';
  if (keysText === '') {
    if (opts.production) {
      return { ok: false, problems: [{ setting: 'PAYLOAD_CODEC_KEYS', message: 'must be set when NODE_ENV=production: comma-separated <key id>:<base64 of 32 random bytes> (e.g. `openssl rand -base64 32`)' }] };
    }
    if (active !== '' && active !== DEVELOPMENT_KEY_ID) {
      return { ok: false, problems: [{ setting: 'PAYLOAD_CODEC_KEY_ID', message: `"${active}" is not a key of PAYLOAD_CODEC_KEYS (unset: only the development key "${DEVELOPMENT_KEY_ID}")` }] };
    }
    return { ok: true, keyring: developmentKeyring() };
  }

  const problems: KeyringProblem[] = [];
  const keys = new Map<string, Buffer>();
  keysText.split(',').forEach((rawEntry, index) => {
    const entry = rawEntry.trim();
    const at = `entry ${index + 1}`;
    const colon = entry.indexOf(':');
    if (colon < 0) {
      problems.push({ setting: 'PAYLOAD_CODEC_KEYS', message: `${at} is not <key id>:<base64 key>` });
      return;
    }
    const id = entry.slice(0, colon).trim();
    const encoded = entry.slice(colon + 1).trim();
    if (!KEY_ID.test(id)) {
      problems.push({ setting: 'PAYLOAD_CODEC_KEYS', message: `${at}: key id "${id}" must be 1-64 of A-Z a-z 0-9 . _ -` });
      return;
    }
    const key = BASE64.test(encoded) ? Buffer.from(encoded, 'base64') : undefined;
    if (key === undefined || key.length !== KEY_BYTES) {
      // Never echo key material: only its id and length.
      problems.push({ setting: 'PAYLOAD_CODEC_KEYS', message: `key "${id}" must be ${KEY_BYTES} bytes in base64 (got ${key === undefined ? 'no valid base64' : `${key.length} bytes`})` });
      return;
    }
    if (keys.has(id)) {
      problems.push({ setting: 'PAYLOAD_CODEC_KEYS', message: `key id "${id}" is listed twice` });
      return;
    }
    keys.set(id, key);
  });

  let activeKeyId = active;
  if (activeKeyId === '') {
    if (keys.size === 1) activeKeyId = [...keys.keys()][0]!;
    else if (keys.size > 1) problems.push({ setting: 'PAYLOAD_CODEC_KEY_ID', message: `must name the key that encrypts, one of ${[...keys.keys()].join(', ')}` });
  } else if (!KEY_ID.test(activeKeyId) || (problems.length === 0 && !keys.has(activeKeyId))) {
    problems.push({ setting: 'PAYLOAD_CODEC_KEY_ID', message: `"${activeKeyId}" is not a key of PAYLOAD_CODEC_KEYS (${[...keys.keys()].join(', ') || 'none'})` });
  }
  if (opts.production && problems.length === 0 && keys.get(activeKeyId)?.equals(Buffer.from(DEVELOPMENT_KEY_BASE64, 'base64'))) {
    problems.push({ setting: 'PAYLOAD_CODEC_KEYS', message: 'the active key must not be the development key when NODE_ENV=production' });
  }
  if (problems.length > 0) return { ok: false, problems };
  return { ok: true, keyring: { activeKeyId, keys } };
}
