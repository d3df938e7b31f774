/**
 * The forms REDIS_URL takes: `redis://` / `rediss://` for one Redis (ioredis parses those), and
 * `redis-cluster://[user:password@]host:port,host:port,...` (`rediss-cluster://` with TLS) for a
 * Redis Cluster, whose listed nodes are seeds: the client learns the rest from CLUSTER SLOTS.
 * Pure parsing, no client: config.ts validates REDIS_URL with it.
 */
export type RedisTarget =
  | { mode: 'single'; url: string }
  | {
      mode: 'cluster';
      nodes: Array<{ host: string; port: number }>;
      username?: string;
      password?: string;
      tls: boolean;
    };

const CLUSTER_SCHEME = /^(rediss?)-cluster:\/\/(.*)$/i;

/** Throws an Error naming what is wrong; the password never appears in the message. */
export function parseRedisUrl(url: string): RedisTarget {
  const match = CLUSTER_SCHEME.exec(url.trim());
  if (!match) {
    if (!/^rediss?:\/\//i.test(url.trim())) throw new Error('must start with redis://, rediss://, redis-cluster:// or rediss-cluster://');
    return { mode: 'single', url };
  }
  const tls = match[1]!.toLowerCase() === 'rediss';
  let rest = match[2]!.replace(/\/+$/, '');
  let username: string | undefined;
  let password: string | undefined;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const credentials = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const colon = credentials.indexOf(':');
    const user = decodeURIComponent(colon >= 0 ? credentials.slice(0, colon) : '');
    password = decodeURIComponent(colon >= 0 ? credentials.slice(colon + 1) : credentials);
    if (user !== '') username = user;
  }
  const nodes = rest.split(',').map((part) => part.trim()).filter((part) => part !== '').map((part) => {
    const hostPort = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(part);
    const port = Number(hostPort?.[2]);
    if (!hostPort || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new Error(`cluster node "${part}" is not host:port`);
    }
    return { host: hostPort[1]!.replace(/^\[|\]$/g, ''), port };
  });
  if (nodes.length === 0) throw new Error('a redis-cluster:// URL needs at least one host:port');
  return { mode: 'cluster', nodes, username, password: password === '' ? undefined : password, tls };
}
