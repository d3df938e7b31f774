/**
 * Upstream channels (upstream_channel): where the gateway sends requests. Written by
 * `PUT /admin/channels/:id`, read by the admin GETs (never with the key) and by the
 * worker's ChannelRouter (with the key decrypted, only to call the upstream).
 *
 * The channel's upstream API key is stored only encrypted (AES-256-GCM under the payload
 * codec's keys, src/codec/body-cipher.ts), bound to the channel id: a ciphertext copied
 * onto another channel's row fails to open.
 */
import type { Knex } from 'knex';
import { openBody, sealBody } from '../codec/body-cipher';
import type { CodecKeyring } from '../codec/keyring';

/** A channel without its key: what the admin API shows. */
export interface ChannelView {
  id: string;
  baseUrl: string;
  models: string[];
  weight: number;
  enabled: boolean;
  hasApiKey: boolean;
  createdAt: Date;
  updatedAt: Date;
}

/** A channel with its key decrypted: only the worker's router holds these, in memory. */
export interface RoutableChannel {
  id: string;
  baseUrl: string;
  apiKey?: string;
  models: readonly string[];
  weight: number;
  enabled: boolean;
}

export interface ChannelWrite {
  id: string;
  baseUrl: string;
  /** undefined: keep the stored key; null: remove it; a string: replace it. */
  apiKey?: string | null;
  models: string[];
  weight: number;
  enabled: boolean;
}

interface ChannelRow {
  channel_id: string;
  base_url: string;
  api_key_key_id: string | null;
  api_key_ciphertext: Buffer | null;
  models: string[];
  weight: number;
  enabled: boolean;
  created_at: Date;
  updated_at: Date;
}

const TABLE = 'upstream_channel';
const VIEW_COLUMNS = ['channel_id', 'base_url', 'api_key_key_id', 'models', 'weight', 'enabled', 'created_at', 'updated_at'] as const;

// The additional authenticated data: a key copied onto another channel's row fails to open.
const aad = (channelId: string): string => `channel-api-key\n${channelId}`;

function toView(row: Omit<ChannelRow, 'api_key_ciphertext'>): ChannelView {
  return {
    id: row.channel_id,
    baseUrl: row.base_url,
    models: row.models,
    weight: row.weight,
    enabled: row.enabled,
    hasApiKey: row.api_key_key_id !== null,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

export function createChannelRepository(db: Knex, keyring: CodecKeyring) {
  return {
    /** Creates or replaces a channel; whether it was created. */
    async put(channel: ChannelWrite): Promise<{ channel: ChannelView; created: boolean }> {
      const key = channel.apiKey === undefined
        ? {}
        : channel.apiKey === null
          ? { api_key_key_id: null, api_key_ciphertext: null }
          : (() => {
            const sealed = sealBody(keyring, Buffer.from(channel.apiKey, 'utf8'), aad(channel.id));
            return { api_key_key_id: sealed.keyId, api_key_ciphertext: sealed.data };
          })();
      const values = { base_url: channel.baseUrl, models: channel.models, weight: channel.weight, enabled: channel.enabled, ...key };
      const rows = await db<ChannelRow>(TABLE)
        .insert({ channel_id: channel.id, ...values, ...(channel.apiKey === undefined ? { api_key_key_id: null, api_key_ciphertext: null } : {}) })
        .onConflict('channel_id')
        .merge({ ...values, updated_at: db.fn.now() as unknown as Date })
        // xmax = 0 only on a freshly inserted row: tells create from replace in one statement.
        .returning([...VIEW_COLUMNS, db.raw('(xmax = 0) AS created')]) as unknown as Array<ChannelRow & { created: boolean }>;
      const row = rows[0]!;
      return { channel: toView(row), created: row.created };
    },

    async get(id: string): Promise<ChannelView | undefined> {
      const row = await db<ChannelRow>(TABLE).where({ channel_id: id }).first(...VIEW_COLUMNS);
      return row ? toView(row) : undefined;
    },

    async list(): Promise<ChannelView[]> {
      const rows = await db<ChannelRow>(TABLE).select(...VIEW_COLUMNS).orderBy('channel_id');
      return rows.map(toView);
    },

    /** Every channel with its key decrypted, for the router (never for an answer or a log). */
    async listRoutable(): Promise<RoutableChannel[]> {
      const rows = await db<ChannelRow>(TABLE).select('*').orderBy('channel_id');
      return rows.map((row) => ({
        id: row.channel_id,
        baseUrl: row.base_url,
        models: row.models,
        weight: row.weight,
        enabled: row.enabled,
        ...(row.api_key_key_id && row.api_key_ciphertext
          ? { apiKey: openBody(keyring, { keyId: row.api_key_key_id, data: row.api_key_ciphertext }, aad(row.channel_id)).toString('utf8') }
          : {}),
      }));
    },

    /** Removes a channel (tests and ops clean-up; no HTTP route). */
    async remove(id: string): Promise<boolean> {
      return (await db(TABLE).where({ channel_id: id }).delete()) > 0;
    },
  };
}

export type ChannelRepository = ReturnType<typeof createChannelRepository>;
