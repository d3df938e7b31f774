/**
 * CacheKeys (M1.3): one module names every key; a tenant's keys share one Redis
 * Cluster slot. The slot is computed here the way Redis Cluster does (CRC16/XMODEM of
 * the hash tag, mod 16384), because CLUSTER KEYSLOT is not available on a standalone Redis.
 */
import { CacheKeys, InvalidCacheKeyIdError, MAX_CACHE_KEY_ID_LENGTH } from '../../src/redis/cache-keys';

/** CRC16/XMODEM (poly 0x1021, init 0), the checksum Redis Cluster uses for key slots. */
function crc16(data: Buffer): number {
  let crc = 0;
  for (const byte of data) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) {
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
  }
  return crc;
}

/** Redis Cluster's keyHashSlot: only the text of the first non-empty {...} counts when there is one. */
function keySlot(key: string): number {
  const open = key.indexOf('{');
  if (open !== -1) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) return crc16(Buffer.from(key.slice(open + 1, close))) % 16384;
  }
  return crc16(Buffer.from(key)) % 16384;
}

describe('CacheKeys (M1.3)', () => {
  it('the slot function matches Redis Cluster reference values', () => {
    // Redis Cluster spec: CRC16 of "123456789" is 0x31C3; CLUSTER KEYSLOT values from redis-cli.
    expect(crc16(Buffer.from('123456789'))).toBe(0x31c3);
    expect(keySlot('foo')).toBe(12182);
    expect(keySlot('bar')).toBe(5061);
    expect(keySlot('{user1000}.following')).toBe(keySlot('{user1000}.followers'));
    // An empty first tag means the whole key is hashed (not "bar").
    expect(keySlot('foo{}{bar}')).toBe(8363);
    // Checked once against a cluster-enabled redis-server 7.0 (CLUSTER KEYSLOT).
    expect(keySlot(CacheKeys.tenantQuota('acme'))).toBe(9557);
    expect(keySlot(CacheKeys.request('Ünïcode-tenant', '1'))).toBe(13679);
  });

  it('M1.3 names the tenant, key, request and stream keys with the tenant hash tag', () => {
    expect(CacheKeys.hashTag('acme')).toBe('{t:acme}');
    expect(CacheKeys.tenantQuota('acme')).toBe('bq:{t:acme}:quota');
    expect(CacheKeys.apiKeyBudget('acme', 'key_1')).toBe('bq:{t:acme}:key:key_1');
    expect(CacheKeys.request('acme', 'req-9')).toBe('bq:{t:acme}:req:req-9');
    expect(CacheKeys.requestStream('acme', 'req-9')).toBe('bq:{t:acme}:stream:req-9');
  });

  it('M1.3 names the API-key lookup key', () => {
    expect(CacheKeys.apiKeyLookup('ab12cd')).toBe('bq:apikey:ab12cd');
  });

  it('M1.3 every key of one tenant hashes to the same cluster slot (one Lua call, one slot)', () => {
    for (const tenantId of ['acme', 'tenant-0001', 'Ünïcode-tenant', 't:with:colons']) {
      const keys = [
        CacheKeys.tenantQuota(tenantId),
        CacheKeys.apiKeyBudget(tenantId, 'key-1'),
        CacheKeys.apiKeyBudget(tenantId, 'another-key'),
        CacheKeys.request(tenantId, 'req-1'),
        CacheKeys.request(tenantId, 'req-2'),
        CacheKeys.requestStream(tenantId, 'req-1'),
      ];
      const slot = crc16(Buffer.from(`t:${tenantId}`)) % 16384;
      expect(keys.map(keySlot)).toEqual(keys.map(() => slot));
    }
  });

  it('M1.3 different tenants are spread over different slots', () => {
    const slots = new Set(Array.from({ length: 100 }, (_, i) => keySlot(CacheKeys.tenantQuota(`tenant-${i}`))));
    expect(slots.size).toBeGreaterThan(90);
  });

  it.each([
    ['an empty tenant id', () => CacheKeys.tenantQuota('')],
    ['a tenant id with {', () => CacheKeys.tenantQuota('a{b')],
    ['a tenant id with }', () => CacheKeys.hashTag('a}b')],
    ['an api key id with a brace', () => CacheKeys.apiKeyBudget('acme', '{x}')],
    ['an empty request id', () => CacheKeys.request('acme', '')],
    ['a too long request id', () => CacheKeys.request('acme', 'r'.repeat(MAX_CACHE_KEY_ID_LENGTH + 1))],
    ['an empty key hash', () => CacheKeys.apiKeyLookup('')],
  ])('M1.3 refuses %s with InvalidCacheKeyIdError', (_label, build) => {
    expect(build).toThrow(InvalidCacheKeyIdError);
  });

  it('M1.3 the error says which id was wrong and why', () => {
    expect(() => CacheKeys.apiKeyBudget('acme', 'a}b')).toThrow('Invalid api key id for a cache key: it must not contain "{" or "}"');
    expect(CacheKeys.request('acme', 'r'.repeat(MAX_CACHE_KEY_ID_LENGTH))).toHaveLength(`bq:{t:acme}:req:`.length + MAX_CACHE_KEY_ID_LENGTH);
  });
});
