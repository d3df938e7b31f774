/**
 * Usage-export destinations configured through the admin API (docs/usage-export.md): a row
 * of usage_export_setting replaces the environment's settings of its destination (enabled
 * or disabled). The credential is write-only: stored encrypted (AES-256-GCM under the
 * payload codec's keys, src/codec/body-cipher.ts, bound to the destination's name), read
 * back only to build the destination for a run, never returned and never logged.
 */
import type { Knex } from 'knex';
import { z } from 'zod';
import { openBody, sealBody } from '../codec/body-cipher';
import type { CodecKeyring } from '../codec/keyring';
import type { Config } from '../config';
import { DESTINATION_NAMES, type DestinationName, type ExportDestination } from './destinations';
import { exportDestinationsFromConfig } from './export-config';

const TABLE = 'usage_export_setting';

const httpUrl = z
  .string()
  .max(2048)
  .refine((value) => {
    try {
      const url = new URL(value);
      return (url.protocol === 'http:' || url.protocol === 'https:') && url.username === '' && url.password === '' && url.hostname !== '';
    } catch {
      return false;
    }
  }, 'must be an http:// or https:// URL without user name or password');
const name = z.string().min(1).max(100);

/** The non-secret settings of each destination, and the name of its credential field in a PUT. */
export const DESTINATION_SETTINGS = {
  openmeter: {
    secretField: 'token',
    secretRequired: false,
    schema: z.object({ url: httpUrl, source: name.optional(), type: name.optional(), subject: z.enum(['tenant', 'api_key']).optional() }),
  },
  lago: {
    secretField: 'api_key',
    secretRequired: false,
    schema: z.object({
      url: httpUrl, metric_code: name.optional(),
      id_field: z.enum(['external_subscription_id', 'external_customer_id']).optional(), id_from: z.enum(['tenant', 'api_key']).optional(),
    }),
  },
  stripe: {
    secretField: 'api_key',
    secretRequired: true,
    schema: z.object({
      url: httpUrl.optional(), event_name: name.optional(), value: z.enum(['cost_micros', 'total_tokens']).optional(),
      customers: z.record(z.string().min(1).max(200), z.string().min(1).max(200)).optional(),
    }),
  },
  webhook: {
    secretField: 'secret',
    secretRequired: true,
    schema: z.object({ url: httpUrl }),
  },
} as const;

export interface StoredDestinationSettings {
  enabled: boolean;
  settings: Record<string, unknown>;
  secretSet: boolean;
  updatedAt: Date;
}

interface SettingRow {
  destination: string;
  enabled: boolean;
  settings: Record<string, unknown>;
  secret_key_id: string | null;
  secret_ciphertext: Buffer | null;
  updated_at: Date;
}

const aad = (destination: string): string => `usage-export-secret\n${destination}`;

export function createExportSettingsRepository(db: Knex, keyring: CodecKeyring) {
  const open = (row: SettingRow): string | undefined =>
    row.secret_key_id && row.secret_ciphertext ? openBody(keyring, { keyId: row.secret_key_id, data: row.secret_ciphertext }, aad(row.destination)).toString('utf8') : undefined;

  return {
    /** The stored settings without the credential (whether one is set only). */
    async get(destination: DestinationName): Promise<StoredDestinationSettings | undefined> {
      const row = await db<SettingRow>(TABLE).where({ destination }).first();
      return row && { enabled: row.enabled, settings: row.settings, secretSet: row.secret_ciphertext !== null, updatedAt: row.updated_at };
    },

    /** Whether a credential is stored (a PUT without one keeps it). */
    async hasSecret(destination: DestinationName): Promise<boolean> {
      const row = await db<SettingRow>(TABLE).where({ destination }).whereNotNull('secret_ciphertext').first('destination');
      return row !== undefined;
    },

    /** Replaces the settings; `secret` undefined keeps the stored one, null removes it. */
    async put(destination: DestinationName, value: { enabled: boolean; settings: Record<string, unknown>; secret?: string | null }): Promise<void> {
      const row: Record<string, unknown> = { destination, enabled: value.enabled, settings: JSON.stringify(value.settings), updated_at: db.fn.now() };
      if (value.secret === null) Object.assign(row, { secret_key_id: null, secret_ciphertext: null });
      else if (value.secret !== undefined) {
        const sealed = sealBody(keyring, Buffer.from(value.secret, 'utf8'), aad(destination));
        Object.assign(row, { secret_key_id: sealed.keyId, secret_ciphertext: sealed.data });
      }
      await db(TABLE).insert({ secret_key_id: null, secret_ciphertext: null, ...row }).onConflict('destination').merge(Object.keys(row).filter((k) => k !== 'destination'));
    },

    /** Removes the admin settings: the destination follows the environment again. */
    async remove(destination: DestinationName): Promise<boolean> {
      return (await db(TABLE).where({ destination }).del()) > 0;
    },

    /** Which destinations have an admin row, and whether it is enabled (no credential opened). */
    async enabledByDestination(): Promise<Map<DestinationName, boolean>> {
      const rows = await db<SettingRow>(TABLE).select('destination', 'enabled');
      return new Map(rows.map((r) => [r.destination as DestinationName, r.enabled]));
    },

    /** Every stored row with its credential opened: for building the destinations of a run only. */
    async readAll(): Promise<Array<{ destination: DestinationName; enabled: boolean; settings: Record<string, unknown>; secret: string | undefined }>> {
      const rows = await db<SettingRow>(TABLE).select('*');
      return rows.map((r) => ({ destination: r.destination as DestinationName, enabled: r.enabled, settings: r.settings, secret: open(r) }));
    },
  };
}

export type ExportSettingsRepository = ReturnType<typeof createExportSettingsRepository>;

/** The environment settings of one destination, replaced by an admin row's (its omitted optional fields keep the environment's). */
function configWith(config: Readonly<Config>, destination: DestinationName, s: Record<string, unknown>, secret: string | undefined): Readonly<Config> {
  const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
  switch (destination) {
    case 'openmeter':
      return {
        ...config, USAGE_EXPORT_OPENMETER_URL: str(s.url), USAGE_EXPORT_OPENMETER_TOKEN: secret,
        USAGE_EXPORT_OPENMETER_SOURCE: str(s.source) ?? config.USAGE_EXPORT_OPENMETER_SOURCE, USAGE_EXPORT_OPENMETER_TYPE: str(s.type) ?? config.USAGE_EXPORT_OPENMETER_TYPE,
        USAGE_EXPORT_OPENMETER_SUBJECT: (str(s.subject) as Config['USAGE_EXPORT_OPENMETER_SUBJECT'] | undefined) ?? config.USAGE_EXPORT_OPENMETER_SUBJECT,
      };
    case 'lago':
      return {
        ...config, USAGE_EXPORT_LAGO_URL: str(s.url), USAGE_EXPORT_LAGO_API_KEY: secret,
        USAGE_EXPORT_LAGO_METRIC_CODE: str(s.metric_code) ?? config.USAGE_EXPORT_LAGO_METRIC_CODE,
        USAGE_EXPORT_LAGO_ID_FIELD: (str(s.id_field) as Config['USAGE_EXPORT_LAGO_ID_FIELD'] | undefined) ?? config.USAGE_EXPORT_LAGO_ID_FIELD,
        USAGE_EXPORT_LAGO_ID_FROM: (str(s.id_from) as Config['USAGE_EXPORT_LAGO_ID_FROM'] | undefined) ?? config.USAGE_EXPORT_LAGO_ID_FROM,
      };
    case 'stripe':
      return {
        ...config, USAGE_EXPORT_STRIPE_API_KEY: secret, USAGE_EXPORT_STRIPE_URL: str(s.url) ?? config.USAGE_EXPORT_STRIPE_URL,
        USAGE_EXPORT_STRIPE_EVENT_NAME: str(s.event_name) ?? config.USAGE_EXPORT_STRIPE_EVENT_NAME,
        USAGE_EXPORT_STRIPE_VALUE: (str(s.value) as Config['USAGE_EXPORT_STRIPE_VALUE'] | undefined) ?? config.USAGE_EXPORT_STRIPE_VALUE,
        USAGE_EXPORT_STRIPE_CUSTOMERS: (s.customers as Record<string, string> | undefined) ?? config.USAGE_EXPORT_STRIPE_CUSTOMERS,
      };
    case 'webhook':
      return { ...config, USAGE_EXPORT_WEBHOOK_URL: str(s.url), USAGE_EXPORT_WEBHOOK_SECRET: secret };
  }
}

/**
 * The destinations of a run: each from its admin row when it has one (a disabled row turns
 * it off), else from the environment. Read at every run, so an admin change reaches the
 * next run of every worker.
 */
export async function resolveExportDestinations(config: Readonly<Config>, settings: Pick<ExportSettingsRepository, 'readAll'>): Promise<ExportDestination[]> {
  const rows = new Map((await settings.readAll()).map((r) => [r.destination, r]));
  const fromEnv = exportDestinationsFromConfig(config);
  const out: ExportDestination[] = [];
  for (const destination of DESTINATION_NAMES) {
    const row = rows.get(destination);
    if (row === undefined) {
      out.push(...fromEnv.filter((d) => d.name === destination));
      continue;
    }
    if (!row.enabled) continue;
    out.push(...exportDestinationsFromConfig(configWith(config, destination, row.settings, row.secret)).filter((d) => d.name === destination));
  }
  return out;
}

/** The names of the destinations a run would export to, without opening any credential (the gauges read it on every scrape). */
export async function configuredDestinationNames(config: Readonly<Config>, settings: Pick<ExportSettingsRepository, 'enabledByDestination'>): Promise<DestinationName[]> {
  const admin = await settings.enabledByDestination();
  const fromEnv = new Set(exportDestinationsFromConfig(config).map((d) => d.name));
  return DESTINATION_NAMES.filter((d) => admin.get(d) ?? fromEnv.has(d));
}
