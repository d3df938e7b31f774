/**
 * src/config.ts: the payload codec's key settings (issue 8) are checked at start-up, and a
 * bad or missing key is a ConfigError with a readable message, never key material.
 */
import { ConfigError, loadConfig } from '../src/config';
import { DEVELOPMENT_KEY_BASE64, DEVELOPMENT_KEY_ID } from '../src/codec/keyring';
import { exportDestinationsFromConfig } from '../src/export/export-config';

const KEY_A = Buffer.alloc(32, 1).toString('base64');
const KEY_B = Buffer.alloc(32, 2).toString('base64');
const PROD = { NODE_ENV: 'production', ADMIN_TOKEN: 'a-real-admin-token-0123' };

function configError(env: NodeJS.ProcessEnv): string {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('loadConfig accepted the environment');
}

describe('loadConfig: payload codec keys (issue 8)', () => {
  it('development and test without settings: the fixed development key', () => {
    for (const NODE_ENV of ['development', 'test']) {
      const config = loadConfig({ NODE_ENV });
      expect(config.payloadCodecKeys.activeKeyId).toBe(DEVELOPMENT_KEY_ID);
      expect(config.payloadCodecKeys.keys.get(DEVELOPMENT_KEY_ID)?.toString('base64')).toBe(DEVELOPMENT_KEY_BASE64);
    }
  });

  it('parses several keys; the active one is named; the only key is active by default', () => {
    const config = loadConfig({ ...PROD, PAYLOAD_CODEC_KEYS: ` a:${KEY_A} , b:${KEY_B}`, PAYLOAD_CODEC_KEY_ID: 'b' });
    expect(config.payloadCodecKeys.activeKeyId).toBe('b');
    expect([...config.payloadCodecKeys.keys.keys()]).toEqual(['a', 'b']);
    expect(config.payloadCodecKeys.keys.get('a')).toEqual(Buffer.alloc(32, 1));
    expect(loadConfig({ ...PROD, PAYLOAD_CODEC_KEYS: `a:${KEY_A}` }).payloadCodecKeys.activeKeyId).toBe('a');
  });

  it('production requires real keys', () => {
    expect(configError(PROD)).toMatch(/PAYLOAD_CODEC_KEYS: must be set when NODE_ENV=production/);
    expect(configError({ ...PROD, PAYLOAD_CODEC_KEYS: `dev:${DEVELOPMENT_KEY_BASE64}` })).toMatch(/must not be the development key/);
  });

  it.each([
    ['a malformed entry', { PAYLOAD_CODEC_KEYS: `a:${KEY_A},nocolon` }, /PAYLOAD_CODEC_KEYS: entry 2 is not <key id>:<base64 key>/],
    ['a bad key id', { PAYLOAD_CODEC_KEYS: `a b:${KEY_A}` }, /key id "a b" must be 1-64 of/],
    ['a short key', { PAYLOAD_CODEC_KEYS: `a:${Buffer.alloc(16).toString('base64')}` }, /key "a" must be 32 bytes in base64 \(got 16 bytes\)/],
    ['a key that is not base64', { PAYLOAD_CODEC_KEYS: 'a:not*base64' }, /key "a" must be 32 bytes in base64 \(got no valid base64\)/],
    ['a duplicate id', { PAYLOAD_CODEC_KEYS: `a:${KEY_A},a:${KEY_B}` }, /key id "a" is listed twice/],
    ['an active id not in the list', { PAYLOAD_CODEC_KEYS: `a:${KEY_A}`, PAYLOAD_CODEC_KEY_ID: 'c' }, /PAYLOAD_CODEC_KEY_ID: "c" is not a key of PAYLOAD_CODEC_KEYS \(a\)/],
    ['several keys and no active id', { PAYLOAD_CODEC_KEYS: `a:${KEY_A},b:${KEY_B}` }, /PAYLOAD_CODEC_KEY_ID: must name the key that encrypts, one of a, b/],
    ['an active id without keys', { NODE_ENV: 'development', PAYLOAD_CODEC_KEY_ID: 'c' }, /PAYLOAD_CODEC_KEY_ID: "c" is not a key/],
  ])('refuses %s at start-up with a readable ConfigError', (_what, env, message) => {
    const text = configError({ ...PROD, ...env });
    expect(text).toMatch(/^Invalid configuration:/);
    expect(text).toMatch(message);
    // Key material never appears in the message.
    expect(text).not.toContain(KEY_A);
    expect(text).not.toContain(KEY_B);
  });

  it('lists key problems beside the other settings\' problems', () => {
    const text = configError({ ...PROD, API_PORT: 'x', PAYLOAD_CODEC_KEYS: 'broken' });
    expect(text).toMatch(/API_PORT/);
    expect(text).toMatch(/PAYLOAD_CODEC_KEYS: entry 1/);
  });
});

describe('loadConfig: codec server CORS origins (issue 8)', () => {
  it('defaults to the embedded Web UI, both spellings of loopback', () => {
    expect(loadConfig({ EMBEDDED_TEMPORAL_UI_PORT: '9233' }).codecCorsOrigins).toEqual(['http://127.0.0.1:9233', 'http://localhost:9233']);
  });

  it('takes a comma-separated list of origins and refuses a URL with a path', () => {
    expect(loadConfig({ CODEC_CORS_ORIGINS: 'https://temporal.example.com, http://localhost:8233' }).codecCorsOrigins).toEqual(['https://temporal.example.com', 'http://localhost:8233']);
    expect(configError({ CODEC_CORS_ORIGINS: 'https://temporal.example.com/ui' })).toMatch(/CODEC_CORS_ORIGINS: "https:\/\/temporal.example.com\/ui" is not an origin/);
  });
});

describe('loadConfig: the sweeper (issue 9)', () => {
  it('defaults to 15 minutes and 1,000 rows a run, below the relay life of an hour', () => {
    const config = loadConfig({});
    expect([config.SWEEP_PENDING_AFTER_SECONDS, config.SWEEP_MAX_PER_RUN, config.RELAY_TTL_SECONDS]).toEqual([900, 1000, 3600]);
  });

  it('refuses a sweep age that the relay does not outlive (a sweep would void delivered output)', () => {
    expect(configError({ SWEEP_PENDING_AFTER_SECONDS: '3600' })).toMatch(/SWEEP_PENDING_AFTER_SECONDS: must be less than RELAY_TTL_SECONDS/);
    expect(loadConfig({ SWEEP_PENDING_AFTER_SECONDS: '3600', RELAY_TTL_SECONDS: '7200' }).SWEEP_PENDING_AFTER_SECONDS).toBe(3600);
  });
});

describe('loadConfig: codec sessions and image estimates (issue 8)', () => {
  it('CODEC_SESSION_TTL_SECONDS: an hour by default, at most a day', () => {
    expect(loadConfig({}).CODEC_SESSION_TTL_SECONDS).toBe(3600);
    expect(loadConfig({ CODEC_SESSION_TTL_SECONDS: '86400' }).CODEC_SESSION_TTL_SECONDS).toBe(86_400);
    expect(configError({ CODEC_SESSION_TTL_SECONDS: '86401' })).toMatch(/CODEC_SESSION_TTL_SECONDS/);
    expect(configError({ CODEC_SESSION_TTL_SECONDS: '0' })).toMatch(/CODEC_SESSION_TTL_SECONDS/);
  });

  it('IMAGE_WORST_CASE_TOKENS: unset or empty leaves the rule\'s worst case; a positive integer replaces it', () => {
    expect(loadConfig({}).IMAGE_WORST_CASE_TOKENS).toBeUndefined();
    expect(loadConfig({ IMAGE_WORST_CASE_TOKENS: '' }).IMAGE_WORST_CASE_TOKENS).toBeUndefined();
    expect(loadConfig({ IMAGE_WORST_CASE_TOKENS: '2000' }).IMAGE_WORST_CASE_TOKENS).toBe(2000);
    for (const bad of ['0', '-5', '1.5', 'many']) expect(configError({ IMAGE_WORST_CASE_TOKENS: bad })).toMatch(/IMAGE_WORST_CASE_TOKENS/);
  });
});

describe('loadConfig: usage export destinations (issue 12)', () => {
  it('exports nowhere by default; each destination is on when its URL (Stripe: key) is set', () => {
    expect(exportDestinationsFromConfig(loadConfig({})).map((d) => d.name)).toEqual([]);
    const config = loadConfig({
      USAGE_EXPORT_OPENMETER_URL: 'http://om.local', USAGE_EXPORT_STRIPE_API_KEY: 'sk_test_1',
      USAGE_EXPORT_STRIPE_CUSTOMERS: '{"acme":"cus_1"}', USAGE_EXPORT_WEBHOOK_URL: 'http://hook.local/u', USAGE_EXPORT_WEBHOOK_SECRET: 'whsec_x',
    });
    expect(exportDestinationsFromConfig(config).map((d) => d.name)).toEqual(['openmeter', 'stripe', 'webhook']);
    expect(config.USAGE_EXPORT_STRIPE_CUSTOMERS).toEqual({ acme: 'cus_1' });
    expect([config.USAGE_EXPORT_INTERVAL_SECONDS, config.USAGE_EXPORT_RECONCILE_INTERVAL_SECONDS, config.USAGE_EXPORT_OPENMETER_SOURCE]).toEqual([30, 86_400, 'durable-billing']);
  });

  it('refuses an unsigned webhook, a bad customer map and an unknown Lago id field, without echoing the secret', () => {
    expect(configError({ USAGE_EXPORT_WEBHOOK_URL: 'http://hook.local/u' })).toMatch(/USAGE_EXPORT_WEBHOOK_SECRET: USAGE_EXPORT_WEBHOOK_URL and USAGE_EXPORT_WEBHOOK_SECRET are set together/);
    expect(configError({ USAGE_EXPORT_STRIPE_CUSTOMERS: '["cus_1"]' })).toMatch(/USAGE_EXPORT_STRIPE_CUSTOMERS: must be a JSON object/);
    expect(configError({ USAGE_EXPORT_LAGO_ID_FIELD: 'customer' })).toMatch(/USAGE_EXPORT_LAGO_ID_FIELD/);
    expect(configError({ USAGE_EXPORT_WEBHOOK_SECRET: 'whsec_do_not_echo' })).not.toContain('whsec_do_not_echo');
  });
});
