/**
 * REDIS_URL's forms (src/redis/redis-url.ts): one Redis, or a Redis Cluster as
 * redis-cluster://host:port,... (issue 13); a malformed one is a ConfigError that never shows
 * the password. createRedis builds an ioredis Cluster for the cluster form.
 */
import { Cluster } from 'ioredis';
import { ConfigError, loadConfig } from '../../src/config';
import { createRedis, isCluster } from '../../src/redis/client';
import { parseRedisUrl } from '../../src/redis/redis-url';
import { hashedPart, keySlot } from '../../src/redis/key-slot';

describe('REDIS_URL forms (issue 13 item 3)', () => {
  it('redis:// and rediss:// are one Redis, passed through as written', () => {
    expect(parseRedisUrl('redis://h:6379/2')).toEqual({ mode: 'single', url: 'redis://h:6379/2' });
    expect(parseRedisUrl('rediss://:pw@h:6380')).toEqual({ mode: 'single', url: 'rediss://:pw@h:6380' });
  });

  it('redis-cluster:// lists seed nodes, with optional credentials and TLS', () => {
    expect(parseRedisUrl('redis-cluster://10.0.0.1:7000, 10.0.0.2:7001,[::1]:7002/')).toEqual({
      mode: 'cluster', tls: false, username: undefined, password: undefined,
      nodes: [{ host: '10.0.0.1', port: 7000 }, { host: '10.0.0.2', port: 7001 }, { host: '::1', port: 7002 }],
    });
    expect(parseRedisUrl('rediss-cluster://billing:s%40cret@a:1,b:2')).toEqual({
      mode: 'cluster', tls: true, username: 'billing', password: 's@cret', nodes: [{ host: 'a', port: 1 }, { host: 'b', port: 2 }],
    });
    expect(parseRedisUrl('redis-cluster://:only-pass@a:1')).toMatchObject({ username: undefined, password: 'only-pass' });
  });

  it('refuses what is not one of the forms, naming the problem but never the password', () => {
    expect(() => parseRedisUrl('redis-cluster://')).toThrow(/at least one host:port/);
    expect(() => parseRedisUrl('redis-cluster://:hunter2@a:1,b')).toThrow(/"b" is not host:port/);
    expect(() => parseRedisUrl('redis-cluster://a:70000')).toThrow(/not host:port/);
    expect(() => parseRedisUrl('http://a:1')).toThrow(/must start with/);
    let message = '';
    try {
      loadConfig({ REDIS_URL: 'redis-cluster://:hunter2@a:1,b' });
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      message = (err as Error).message;
    }
    expect(message).toContain('REDIS_URL');
    expect(message).not.toContain('hunter2');
    expect(loadConfig({ REDIS_URL: 'redis-cluster://a:1,b:2' }).REDIS_URL).toBe('redis-cluster://a:1,b:2');
  });

  it('createRedis makes an ioredis Cluster for redis-cluster:// and a plain client otherwise', () => {
    const cluster = createRedis('redis-cluster://127.0.0.1:1,127.0.0.1:2', { lazyConnect: true });
    const single = createRedis('redis://127.0.0.1:1', { lazyConnect: true });
    try {
      expect(cluster).toBeInstanceOf(Cluster);
      expect(isCluster(cluster)).toBe(true);
      expect(isCluster(single)).toBe(false);
      if (!isCluster(cluster)) throw new Error('unreachable');
      expect(cluster.options).toMatchObject({ enableOfflineQueue: false, lazyConnect: true, redisOptions: { maxRetriesPerRequest: 1 } });
    } finally {
      cluster.disconnect();
      single.disconnect();
    }
  });

  it('key slots: the hash tag decides, as Redis Cluster specifies (CRC16 XMODEM mod 16384)', () => {
    // Reference values from the Redis Cluster specification and CLUSTER KEYSLOT.
    expect(keySlot('123456789')).toBe(12739);
    expect(keySlot('foo')).toBe(12182);
    expect(keySlot('{user1000}.following')).toBe(keySlot('{user1000}.followers'));
    expect(hashedPart('foo{}{bar}')).toBe('foo{}{bar}');
    expect(hashedPart('foo{{bar}}zap')).toBe('{bar');
    expect(hashedPart('foo{bar}{zap}')).toBe('bar');
  });
});
