/**
 * Embedded Redis Cluster: `masters` redis-server children with cluster mode on, each with
 * `replicasPerMaster` replicas, joined by `redis-cli --cluster create` and covering all 16384
 * slots. Used by `npm run cluster` and by the cluster tests (test/cluster/), which SIGKILL a
 * master to watch its replica take over.
 *
 * The cluster is reached through `url`, a `redis-cluster://host:port,host:port,...` address that
 * src/redis/client.ts turns into an ioredis `Cluster` (see docs/redis-cluster.md).
 */
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { assertPortFree, canConnect, freePort, spawnService, waitUntilReady, ServiceStartError, type ServiceProcess } from './child';

/** Redis Cluster always has 16384 hash slots. */
const CLUSTER_SLOTS = 16384;
const HOST = '127.0.0.1';
/** The node settings shared with docker-compose.yml (deploy/redis/cluster-node.conf). */
const CLUSTER_NODE_CONF = path.resolve(__dirname, '../../deploy/redis/cluster-node.conf');

export interface EmbeddedRedisClusterOptions {
  /** Each node keeps its nodes.conf, AOF and log under `<dir>/node-<port>`. */
  dir: string;
  /** Nodes listen on basePort, basePort+1, ... (bus ports are chosen free). Ignored when `ports` is given. */
  basePort?: number;
  /** Exact client ports, masters*(1+replicasPerMaster) of them; free ports when neither this nor basePort is set. */
  ports?: number[];
  /** Number of masters (3: the smallest cluster Redis allows). */
  masters?: number;
  /** Replicas per master (1). */
  replicasPerMaster?: number;
  /** AOF persistence (on by default; tests turn it off for speed). */
  appendOnly?: boolean;
  /**
   * How long a master may be unreachable before it is marked failed and a replica takes over
   * (cluster-node-timeout, 2000 ms). Small here so failover tests take seconds, not the 15 s default.
   */
  nodeTimeoutMs?: number;
}

export interface EmbeddedRedisCluster {
  nodes: Array<{ host: string; port: number }>;
  /** `redis-cluster://127.0.0.1:p1,127.0.0.1:p2,...`: every node is a seed; the client discovers the rest. */
  url: string;
  /** SIGKILLs the `index`-th current master (ordered by the first slot it serves; 0 by default). */
  killMaster(index?: number): Promise<{ port: number }>;
  /** Starts a stopped or killed node again on its port; it rejoins from its nodes.conf (a former master comes back as a replica). */
  restartNode(port: number): Promise<void>;
  /** Resolves when every running node reports cluster_state:ok with all slots served by a running master. */
  waitUntilHealthy(timeoutMs?: number): Promise<void>;
  /** Ports of the current masters, ordered by the first slot each serves (as seen by a running node). */
  masterPorts(): Promise<number[]>;
  /** Ports of the replicas of the master on `port`. */
  replicasOf(port: number): Promise<number[]>;
  /**
   * SIGSTOP / SIGCONT one node: a stopped replica falls behind its master (what it has not
   * received is lost if the master then dies), as a replica on a saturated link would.
   */
  freezeNode(port: number): void;
  thawNode(port: number): void;
  stop(): Promise<void>;
}

interface ClusterNodeProcess {
  port: number;
  busPort: number;
  dir: string;
  process?: ServiceProcess;
}

/** Runs redis-cli against one node; rejects on a non-zero exit or after `timeoutMs`. */
export function redisCli(port: number, args: string[], timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-h', HOST, '-p', String(port), ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`redis-cli -p ${port} ${args.join(' ')}: ${err.message} ${stderr}`.trim()));
      else resolve(stdout);
    });
  });
}

function infoField(info: string, field: string): string | undefined {
  const line = info.split('\n').find((l) => l.startsWith(`${field}:`));
  return line?.slice(field.length + 1).trim();
}

interface NodeLine {
  id: string;
  port: number;
  /** The master's id for a replica, '-' for a master. */
  masterId: string;
  master: boolean;
  failed: boolean;
  firstSlot: number;
  slotCount: number;
}

/** Parses CLUSTER NODES: `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`. */
function parseClusterNodes(text: string): NodeLine[] {
  const out: NodeLine[] = [];
  for (const line of text.split('\n')) {
    const parts = line.trim().split(' ');
    if (parts.length < 8) continue;
    const port = Number(parts[1]!.split('@')[0]!.split(':').pop());
    const flags = parts[2]!.split(',');
    let firstSlot = Number.MAX_SAFE_INTEGER;
    let slotCount = 0;
    for (const range of parts.slice(8)) {
      if (range.startsWith('[')) continue; // a slot being migrated/imported
      const [from, to] = range.split('-').map(Number) as [number, number | undefined];
      firstSlot = Math.min(firstSlot, from);
      slotCount += (to ?? from) - from + 1;
    }
    out.push({ id: parts[0]!, port, masterId: parts[3]!, master: flags.includes('master'), failed: flags.includes('fail') || flags.includes('fail?'), firstSlot, slotCount });
  }
  return out;
}

export async function startEmbeddedRedisCluster(opts: EmbeddedRedisClusterOptions): Promise<EmbeddedRedisCluster> {
  const masters = opts.masters ?? 3;
  const replicas = opts.replicasPerMaster ?? 1;
  if (masters < 3) throw new ServiceStartError('a Redis Cluster needs at least 3 masters');
  const count = masters * (1 + replicas);
  let ports: number[];
  if (opts.ports) {
    if (opts.ports.length !== count) throw new ServiceStartError(`a cluster of ${masters} masters with ${replicas} replicas each needs ${count} ports, got ${opts.ports.length}`);
    ports = opts.ports;
  } else if (opts.basePort !== undefined) {
    ports = Array.from({ length: count }, (_, i) => opts.basePort! + i);
  } else {
    ports = [];
    while (ports.length < count) {
      const p = await freePort();
      if (!ports.includes(p)) ports.push(p);
    }
  }
  const nodes: ClusterNodeProcess[] = [];
  for (const port of ports) {
    await assertPortFree(port, 'Redis Cluster node');
    // The bus port is chosen free too: the default port+10000 may be taken (or above 65535).
    let busPort = await freePort();
    while (ports.includes(busPort) || nodes.some((n) => n.busPort === busPort)) busPort = await freePort();
    nodes.push({ port, busPort, dir: path.join(opts.dir, `node-${port}`) });
  }
  const nodeTimeoutMs = opts.nodeTimeoutMs ?? 2000;

  const startNode = async (node: ClusterNodeProcess): Promise<void> => {
    fs.mkdirSync(node.dir, { recursive: true });
    // The node settings docker-compose.yml uses too; only where it listens and its timeout differ.
    const args = [
      CLUSTER_NODE_CONF,
      '--port', String(node.port),
      '--bind', HOST,
      '--dir', node.dir,
      '--cluster-port', String(node.busPort),
      '--cluster-node-timeout', String(nodeTimeoutMs),
      ...(opts.appendOnly === false ? ['--appendonly', 'no'] : []),
      '--daemonize', 'no',
      '--protected-mode', 'yes',
      '--loglevel', 'warning',
    ];
    const proc = spawnService(`redis-cluster:${node.port}`, 'redis-server', args);
    node.process = proc;
    await waitUntilReady(proc, () => canConnect(node.port), 15_000);
  };

  const running = (): ClusterNodeProcess[] =>
    nodes.filter((n) => n.process && n.process.child.exitCode === null && n.process.child.signalCode === null);

  const stop = async (): Promise<void> => {
    for (const n of running()) n.process?.child.kill('SIGCONT'); // a frozen node would not see SIGTERM
    await Promise.all(nodes.map((n) => n.process?.stop('SIGTERM') ?? Promise.resolve()));
  };

  const nodeLines = async (): Promise<NodeLine[]> => {
    for (const node of running()) {
      const text = await redisCli(node.port, ['cluster', 'nodes']).catch(() => undefined);
      if (text !== undefined) return parseClusterNodes(text);
    }
    throw new Error('no running Redis Cluster node answers');
  };
  const masterLines = async (): Promise<NodeLine[]> =>
    (await nodeLines()).filter((l) => l.master && !l.failed && l.slotCount > 0).sort((a, b) => a.firstSlot - b.firstSlot);
  const nodeAt = (port: number): ClusterNodeProcess => {
    const node = nodes.find((n) => n.port === port);
    if (!node) throw new Error(`port ${port} is not a node of this cluster`);
    return node;
  };

  /** Healthy: every running node sees state ok, all slots assigned and served by running masters, replicas in sync. */
  const healthy = async (): Promise<boolean> => {
    const live = running();
    const livePorts = new Set(live.map((n) => n.port));
    for (const node of live) {
      const info = await redisCli(node.port, ['cluster', 'info']);
      if (infoField(info, 'cluster_state') !== 'ok') return false;
      if (Number(infoField(info, 'cluster_slots_ok')) !== CLUSTER_SLOTS) return false;
      const repl = await redisCli(node.port, ['info', 'replication']);
      if (infoField(repl, 'role') === 'slave' && infoField(repl, 'master_link_status') !== 'up') return false;
    }
    const serving = await masterLines();
    if (serving.some((m) => !livePorts.has(m.port))) return false;
    return serving.reduce((sum, m) => sum + m.slotCount, 0) === CLUSTER_SLOTS;
  };

  const waitUntilHealthy = async (timeoutMs = 30_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      try {
        if (await healthy()) return;
      } catch (err) {
        last = (err as Error).message;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new ServiceStartError(`Redis Cluster not healthy after ${timeoutMs} ms ${last}`.trim());
  };

  try {
    // A data directory that already holds the cluster (every node has its nodes.conf) is restarted
    // as it was; otherwise the nodes are fresh and are joined into a new cluster.
    const existing = nodes.every((n) => fs.existsSync(path.join(n.dir, 'nodes.conf')));
    await Promise.all(nodes.map(startNode));
    if (!existing) {
      const seeds = nodes.map((n) => `${HOST}:${n.port}`);
      await redisCli(nodes[0]!.port, ['--cluster', 'create', ...seeds, '--cluster-replicas', String(replicas), '--cluster-yes'], 60_000);
    }
    await waitUntilHealthy(60_000);
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    nodes: nodes.map((n) => ({ host: HOST, port: n.port })),
    url: `redis-cluster://${nodes.map((n) => `${HOST}:${n.port}`).join(',')}`,
    async killMaster(index = 0) {
      const current = await masterLines();
      const target = current[index];
      if (!target) throw new Error(`no master #${index}: the cluster has ${current.length}`);
      const node = nodes.find((n) => n.port === target.port)!;
      await node.process!.stop('SIGKILL');
      return { port: node.port };
    },
    async restartNode(port) {
      const node = nodeAt(port);
      await node.process?.stop('SIGTERM');
      await startNode(node);
    },
    waitUntilHealthy,
    async masterPorts() {
      return (await masterLines()).map((m) => m.port);
    },
    async replicasOf(port) {
      const lines = await nodeLines();
      const master = lines.find((l) => l.port === port);
      return master ? lines.filter((l) => l.masterId === master.id).map((l) => l.port) : [];
    },
    freezeNode(port) {
      nodeAt(port).process?.child.kill('SIGSTOP');
    },
    thawNode(port) {
      nodeAt(port).process?.child.kill('SIGCONT');
    },
    stop,
  };
}
