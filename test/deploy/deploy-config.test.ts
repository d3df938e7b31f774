/**
 * Deployment wiring (M1.4, M13; docs/architecture.md "Scale-out path"): docker-compose.yml,
 * the Dockerfile and the Prometheus, AlertManager and Grafana configs parse and agree
 * with each other and with the app's settings. Needs no Redis, PostgreSQL or Temporal;
 * it does need docker-compose (no engine), which setup installs.
 *
 * What the alert rules and the dashboard query is checked in monitoring-contract.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';
import { z } from 'zod';
import { loadConfig } from '../../src/config';
import { TEMPORAL_DYNAMIC_CONFIG } from '../../src/embedded/temporal';
import { SEARCH_ATTRIBUTES } from '../../src/workflows/search-attributes';

const ROOT = path.resolve(__dirname, '../..');

function readText(relativePath: string): string {
  return readFileSync(path.join(ROOT, relativePath), 'utf8');
}

function readYaml<T>(relativePath: string, schema: z.ZodType<T>): T {
  return schema.parse(yaml.load(readText(relativePath)));
}

const environmentSchema = z.record(z.string());
const dependsOnSchema = z.record(z.object({ condition: z.string() }));
const serviceSchema = z.object({
  image: z.string().optional(),
  build: z.object({ context: z.string(), dockerfile: z.string() }).optional(),
  command: z.union([z.string(), z.array(z.string())]).optional(),
  restart: z.string().optional(),
  environment: environmentSchema.optional(),
  depends_on: z.union([z.array(z.string()), dependsOnSchema]).optional(),
  ports: z.array(z.string()).optional(),
  expose: z.array(z.string()).optional(),
  volumes: z.array(z.string()).optional(),
  healthcheck: z.object({ test: z.array(z.string()) }).passthrough().optional(),
}).passthrough();
type Service = z.infer<typeof serviceSchema>;
const composeSchema = z.object({ version: z.string(), services: z.record(serviceSchema) }).passthrough();

const compose = readYaml('docker-compose.yml', composeSchema);

function service(name: string): Service {
  const found = compose.services[name];
  if (!found) throw new Error(`docker-compose.yml has no service "${name}"`);
  return found;
}

/** Resolves compose's `${VAR:-default}` the way docker-compose does with VAR unset. */
function withDefaults(env: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(env).map(([key, value]) => [key, value.replace(/\$\{[A-Z_]+:-([^}]*)\}/g, '$1')]),
  );
}

/** `./deploy/x:/etc/x:ro` -> { host: 'deploy/x', container: '/etc/x' } for bind mounts. */
function bindMounts(svc: Service): { host: string; container: string }[] {
  return (svc.volumes ?? [])
    .filter((v) => v.startsWith('./'))
    .map((v) => {
      const [host = '', container = ''] = v.split(':');
      return { host: path.normalize(host), container };
    });
}

describe('docker-compose.yml (M13)', () => {
  it('is accepted by `docker-compose config -q`', () => {
    const result = spawnSync('docker-compose', ['-f', 'docker-compose.yml', 'config', '-q'], {
      cwd: ROOT, encoding: 'utf8', timeout: 60_000,
    });
    if (result.error && (result.error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error('docker-compose is not on PATH: setup installs it (Debian apt package docker-compose)');
    }
    expect({ status: result.status, stderr: result.status === 0 ? '' : result.stderr })
      .toEqual({ status: 0, stderr: '' });
  });

  it('uses a compose file format that docker-compose 1.29 reads', () => {
    expect(compose.version).toBe('3.8');
  });

  it('runs the app as api and worker from one Dockerfile with the same settings', () => {
    const api = service('api');
    const worker = service('worker');
    expect(api.command).toEqual(['node_modules/.bin/tsx', 'src/main.ts', 'api']);
    expect(worker.command).toEqual(['node_modules/.bin/tsx', 'src/main.ts', 'worker']);
    expect(api.build).toEqual({ context: '.', dockerfile: 'Dockerfile' });
    expect(worker.build).toEqual(api.build);
    expect(worker.environment).toEqual(api.environment);
    expect(api.environment).toMatchObject({
      TEMPORAL_ADDRESS: 'temporal:7233',
      REDIS_URL: 'redis-cluster://redis-1:6379,redis-2:6379,redis-3:6379',
      DATABASE_URL: 'postgres://billing:billing@postgres:5432/billing',
      API_PORT: '8080',
      WORKER_METRICS_PORT: '9464',
      API_HOST: '0.0.0.0',
    });
    expect(Object.keys(api.environment ?? {})).toEqual(expect.arrayContaining(['ADMIN_TOKEN', 'UPSTREAM_BASE_URL']));
    expect(api.ports).toEqual(['8080:8080']);
    expect(worker.expose).toEqual(['9464']);
  });

  it('gives the app settings that src/config.ts accepts', () => {
    const config = loadConfig(withDefaults(service('api').environment ?? {}));
    expect(config.TEMPORAL_ADDRESS).toBe('temporal:7233');
    expect(config.API_PORT).toBe(8080);
    expect(config.WORKER_METRICS_PORT).toBe(9464);
    expect(config.NODE_ENV).toBe('production');
    // Production refuses to start without codec keys: compose brings (placeholder) ones.
    expect(config.payloadCodecKeys.activeKeyId).toBe('compose-placeholder');
  });

  it('lets the Temporal UI decode through the API codec server (issue 8)', () => {
    const config = loadConfig(withDefaults(service('api').environment ?? {}));
    const ui = service('temporal-ui');
    expect(ui.environment?.TEMPORAL_CODEC_ENDPOINT).toBe('http://localhost:8080/codec');
    // The UI sends the operator's codec session cookie; same site (localhost) as the codec server, so SameSite=Strict lets it through.
    expect(ui.environment?.TEMPORAL_CODEC_INCLUDE_CREDENTIALS).toBe('true');
    expect(new URL(ui.environment?.TEMPORAL_CODEC_ENDPOINT ?? '').hostname).toBe(new URL(config.codecCorsOrigins[0] ?? '').hostname);
    expect(config.codecCorsOrigins).toEqual(ui.environment?.TEMPORAL_CORS_ORIGINS?.split(','));
  });

  it('points the app at the ledger PostgreSQL 16 service with matching credentials', () => {
    const url = new URL(service('api').environment?.DATABASE_URL ?? '');
    const ledger = service(url.hostname);
    expect(ledger.image).toBe('postgres:16');
    expect(ledger.environment).toMatchObject({
      POSTGRES_USER: url.username, POSTGRES_PASSWORD: url.password, POSTGRES_DB: url.pathname.slice(1),
    });
  });

  const temporalServers = ['temporal-1', 'temporal-2'];

  it('runs two Temporal servers of one image on their own PostgreSQL 16, reached as temporal:7233, and the UI on port 8233', () => {
    const [first, second] = temporalServers.map(service);
    expect(first!.image).toMatch(/^temporalio\/server:\d+\.\d+\.\d+$/);
    expect(second!.image).toBe(first!.image);
    expect(second!.environment).toEqual(first!.environment);
    for (const server of [first!, second!]) {
      // The alias of both servers is the app's TEMPORAL_ADDRESS host: DNS spreads the clients over them.
      expect((server as { networks?: unknown }).networks).toEqual({ default: { aliases: ['temporal'] } });
      expect(server.environment).toMatchObject({ CLUSTER_RPC_ADDRESS: 'temporal:7233', PROMETHEUS_ENDPOINT: '0.0.0.0:8000' });
      expect(Number(server.environment?.NUM_HISTORY_SHARDS?.replace(/\$\{[A-Z_]+:-([^}]*)\}/, '$1'))).toBeGreaterThanOrEqual(16);
    }
    const temporalDb = service(first!.environment?.POSTGRES_SEEDS ?? '');
    expect(temporalDb.image).toBe('postgres:16');
    expect(temporalDb.environment).toMatchObject({
      POSTGRES_USER: first!.environment?.POSTGRES_USER, POSTGRES_PASSWORD: first!.environment?.POSTGRES_PWD,
    });
    expect([first!.ports, second!.ports]).toEqual([['7233:7233'], ['7234:7233']]);
    const ui = service('temporal-ui');
    expect(ui.image).toMatch(/^temporalio\/ui:/);
    expect(ui.ports).toEqual(['8233:8080']);
    expect(ui.environment?.TEMPORAL_ADDRESS).toBe('temporal:7233');
  });

  /** The host file behind a container path of a service's bind mounts. */
  function hostFileOf(svc: Service, containerPath: string): string {
    const mount = bindMounts(svc).find((m) => containerPath.startsWith(`${m.container}/`));
    if (!mount) throw new Error(`${JSON.stringify(containerPath)} is not inside a bind mount`);
    expect(svc.volumes).toContain(`./${mount.host}:${mount.container}:ro`);
    return path.join(mount.host, path.relative(mount.container, containerPath));
  }

  it('runs every Temporal server with the config and schema script of `npm run cluster` (deploy/temporal/)', () => {
    for (const server of temporalServers.map(service)) {
      const command = [server.command ?? ''].flat().join(' ');
      const configFile = /--config-file (\S+) start/.exec(command)?.[1] ?? '';
      expect(hostFileOf(server, configFile)).toBe('deploy/temporal/server.yaml');
      expect(server.depends_on).toMatchObject(server === service('temporal-1')
        ? { 'temporal-schema': { condition: 'service_completed_successfully' } }
        : { 'temporal-1': { condition: 'service_healthy' } });
    }
    const schema = service('temporal-schema');
    expect(schema.image).toMatch(/^temporalio\/admin-tools:/);
    expect(schema.image?.split(':')[1]).toBe(service('temporal-1').image?.split(':')[1]);
    const entrypoint = (schema as { entrypoint?: string[] }).entrypoint ?? [];
    expect(hostFileOf(schema, entrypoint.at(-1) ?? '')).toBe('deploy/temporal/setup-schema.sh');
    // The schema step and the servers read the same database settings.
    const { SCHEMA_DIR: _schemaDir, ...dbEnv } = schema.environment ?? {};
    expect(service('temporal-1').environment).toMatchObject(dbEnv);
    expect(schema.restart).toBe('no');
  });

  it('runs Temporal with task-queue fairness on and one partition per task queue, as the embedded dev server', () => {
    const temporal = service('temporal-1');
    const hostFile = hostFileOf(temporal, temporal.environment?.DYNAMIC_CONFIG_FILE_PATH ?? '');
    expect(hostFile).toBe('deploy/temporal/dynamicconfig/billing.yaml');
    const dynamicConfig = readYaml(hostFile, z.record(z.array(z.object({ value: z.unknown(), constraints: z.object({}).passthrough().optional() }).strict())));
    // One unconstrained value per key: it applies to every namespace and task queue.
    const values = Object.fromEntries(Object.entries(dynamicConfig).map(([key, entries]) => {
      expect({ key, entries: entries.length, constrained: entries.some((e) => Object.keys(e.constraints ?? {}).length > 0) })
        .toEqual({ key, entries: 1, constrained: false });
      return [key, entries[0]?.value];
    }));
    expect(values).toEqual(TEMPORAL_DYNAMIC_CONFIG);
    expect(values['matching.enableFairness']).toBe(true);
  });

  it('creates the namespace and registers exactly the search attributes the workflows set, before the app starts', () => {
    const setup = service('temporal-namespace');
    expect(setup.image).toBe(service('temporal-schema').image);
    expect(setup.depends_on).toEqual({
      'temporal-1': { condition: 'service_healthy' }, 'temporal-2': { condition: 'service_healthy' },
    });
    const script = [setup.command ?? ''].flat().join(' ');
    const registered = [...script.matchAll(/\b(\w+):(Keyword|Text|Int|Double|Bool|Datetime|KeywordList)\b/g)].map((m) => [m[1], m[2]]);
    expect(registered).toEqual(Object.entries(SEARCH_ATTRIBUTES));
    expect(script).toContain('temporal operator namespace create --namespace default');
    expect(script).toContain('temporal operator search-attribute create --namespace default');
  });

  it('runs a Redis 7 Cluster of six nodes on the node settings npm run cluster uses (AOF on: nothing lost on restart)', () => {
    const nodes = Object.keys(compose.services).filter((name) => /^redis-\d+$/.test(name)).sort();
    expect(nodes).toEqual(['redis-1', 'redis-2', 'redis-3', 'redis-4', 'redis-5', 'redis-6']);
    for (const name of nodes) {
      const node = service(name);
      expect(node.image).toMatch(/^redis:7(\.|$)/);
      expect([node.command].flat().join(' ')).toContain('redis-server /etc/redis/cluster-node.conf');
      expect(bindMounts(node)).toEqual([{ host: 'deploy/redis', container: '/etc/redis' }]);
      expect(node.healthcheck).toBeDefined();
    }
    // The same file src/embedded/redis-cluster.ts starts its nodes with.
    const conf = readFileSync(path.join(ROOT, 'deploy/redis/cluster-node.conf'), 'utf8');
    expect(conf).toMatch(/^cluster-enabled yes$/m);
    expect(conf).toMatch(/^appendonly yes$/m);
    expect(readFileSync(path.join(ROOT, 'src/embedded/redis-cluster.ts'), 'utf8')).toContain('deploy/redis/cluster-node.conf');
    const create = [service('redis-cluster-create').command].flat().join(' ');
    expect(create).toContain('--cluster create redis-1:6379 redis-2:6379 redis-3:6379 redis-4:6379 redis-5:6379 redis-6:6379');
    expect(create).toContain('--cluster-replicas 1');
    expect(service('redis-cluster-create').restart).toBe('no');
  });

  it('starts the app only after migrations ran and its services are healthy', () => {
    const expected = {
      migrate: { condition: 'service_completed_successfully' },
      'temporal-namespace': { condition: 'service_completed_successfully' },
      postgres: { condition: 'service_healthy' },
      'redis-cluster-create': { condition: 'service_completed_successfully' },
    };
    expect(service('api').depends_on).toEqual(expected);
    expect(service('worker').depends_on).toEqual(expected);
    expect(service('migrate').command).toEqual(['node_modules/.bin/tsx', 'src/db/migrate-cli.ts']);
    // A one-shot that restarted after success would never count as completed.
    expect([service('migrate').restart, service('temporal-namespace').restart, service('temporal-schema').restart]).toEqual(['no', 'no', 'no']);
  });

  it('has a healthcheck on every service another one waits for', () => {
    const awaited = Object.values(compose.services).flatMap((svc) => {
      const deps = svc.depends_on;
      if (deps === undefined || Array.isArray(deps)) return [];
      return Object.entries(deps).filter(([, d]) => d.condition === 'service_healthy').map(([name]) => name);
    });
    expect(awaited).toEqual(expect.arrayContaining(['postgres', 'redis-1', 'redis-6', 'temporal-1', 'temporal-2', 'temporal-postgresql']));
    expect([...new Set(awaited)].filter((name) => service(name).healthcheck === undefined)).toEqual([]);
  });

  it('mounts the monitoring configs from deploy/ that exist in the repository', () => {
    expect(bindMounts(service('prometheus'))).toEqual([{ host: 'deploy/prometheus', container: '/etc/prometheus' }]);
    expect(bindMounts(service('alertmanager'))).toEqual([{ host: 'deploy/alertmanager', container: '/etc/alertmanager' }]);
    expect(bindMounts(service('grafana'))).toEqual([
      { host: 'deploy/grafana/provisioning', container: '/etc/grafana/provisioning' },
      { host: 'deploy/grafana/dashboards', container: '/var/lib/grafana/dashboards' },
    ]);
    expect(service('prometheus').image).toMatch(/^prom\/prometheus:/);
    expect(service('alertmanager').image).toMatch(/^prom\/alertmanager:/);
    expect(service('grafana').image).toMatch(/^grafana\/grafana:/);
    for (const name of ['prometheus', 'alertmanager', 'grafana']) {
      for (const mount of bindMounts(service(name))) expect(existsSync(path.join(ROOT, mount.host))).toBe(true);
    }
  });
});

describe('Dockerfile', () => {
  const lines = readText('Dockerfile').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));

  it('builds on node:20-bookworm-slim with npm ci and runs the api by default', () => {
    const bases = lines.filter((l) => l.startsWith('FROM ')).map((l) => l.split(/\s+/)[1]);
    expect(bases).toEqual(['node:20-bookworm-slim', 'node:20-bookworm-slim']);
    expect(lines.filter((l) => l.startsWith('RUN ') && /\bnpm ci\b/.test(l))).toHaveLength(1);
    expect(lines).toContain('COPY src ./src');
    const cmd = lines.filter((l) => l.startsWith('CMD '));
    expect(cmd).toHaveLength(1);
    expect(JSON.parse(cmd[0]!.slice(4))).toEqual(['node_modules/.bin/tsx', 'src/main.ts', 'api']);
    expect(lines).toContain('USER node');
  });

  it('keeps local state and secrets out of the build context, but not the sources', () => {
    const ignored = readText('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', '.git', '.data', '.env', '.venv']));
    for (const needed of ['src', 'lua', 'migrations', 'package.json', 'package-lock.json', 'tsconfig.json']) {
      expect(ignored).not.toContain(needed);
    }
  });
});

const scrapeSchema = z.object({
  job_name: z.string(),
  metrics_path: z.string().optional(),
  static_configs: z.array(z.object({ targets: z.array(z.string()) })).optional(),
  dns_sd_configs: z.array(z.object({ names: z.array(z.string()), type: z.literal('A'), port: z.number() })).optional(),
}).passthrough();
const prometheusSchema = z.object({
  rule_files: z.array(z.string()),
  alerting: z.object({ alertmanagers: z.array(z.object({ static_configs: z.array(z.object({ targets: z.array(z.string()) })) })) }),
  scrape_configs: z.array(scrapeSchema),
}).passthrough();

describe('deploy/prometheus/prometheus.yml (M1.4)', () => {
  const prometheus = readYaml('deploy/prometheus/prometheus.yml', prometheusSchema);
  const targetsOf = (job: string): string[] => {
    const scrape = prometheus.scrape_configs.find((s) => s.job_name === job);
    if (!scrape) return [];
    const fromStatic = (scrape.static_configs ?? []).flatMap((s) => s.targets);
    const fromDns = (scrape.dns_sd_configs ?? []).flatMap((d) => d.names.map((n) => `${n}:${d.port}`));
    return [...fromStatic, ...fromDns];
  };

  it('scrapes every api and worker replica at /metrics on the ports the app listens on', () => {
    const env = withDefaults(service('api').environment ?? {});
    expect(targetsOf('billing-api')).toEqual([`api:${env.API_PORT}`]);
    expect(targetsOf('billing-worker')).toEqual([`worker:${env.WORKER_METRICS_PORT}`]);
    for (const job of ['billing-api', 'billing-worker']) {
      expect(prometheus.scrape_configs.find((s) => s.job_name === job)?.metrics_path).toBe('/metrics');
    }
  });

  it('scrapes Temporal on the port its PROMETHEUS_ENDPOINT opens', () => {
    const port = service('temporal-1').environment?.PROMETHEUS_ENDPOINT?.split(':')[1];
    expect(targetsOf('temporal')).toEqual([`temporal-1:${port}`, `temporal-2:${port}`]);
  });

  it('scrapes only hosts that are compose services (or itself)', () => {
    const hosts = prometheus.scrape_configs.flatMap((s) => targetsOf(s.job_name)).map((t) => t.split(':')[0] ?? '');
    expect(hosts.filter((h) => h !== 'localhost' && compose.services[h] === undefined)).toEqual([]);
  });

  it('loads alerts.yml and sends alerts to AlertManager', () => {
    expect(prometheus.rule_files).toEqual(['alerts.yml']);
    expect(existsSync(path.join(ROOT, 'deploy/prometheus', 'alerts.yml'))).toBe(true);
    expect(prometheus.alerting.alertmanagers.flatMap((a) => a.static_configs.flatMap((s) => s.targets))).toEqual(['alertmanager:9093']);
  });
});

const webhookSchema = z.object({
  url: z.string(),
  send_resolved: z.boolean(),
  http_config: z.object({ authorization: z.object({ type: z.literal('Bearer'), credentials_file: z.string() }) }),
});
const receiverSchema = z.object({ name: z.string(), webhook_configs: z.array(webhookSchema).optional() });
const alertmanagerSchema = z.object({
  route: z.object({ receiver: z.string() }).passthrough(),
  receivers: z.array(receiverSchema),
}).passthrough();

describe('deploy/alertmanager/alertmanager.yml (M13)', () => {
  const alertmanager = readYaml('deploy/alertmanager/alertmanager.yml', alertmanagerSchema);

  it("posts alerts to the api's admin webhook with the admin token the container writes", () => {
    const webhooks = alertmanager.receivers.flatMap((r) => r.webhook_configs ?? []);
    expect(webhooks.length).toBeGreaterThan(0);
    const command = [service('alertmanager').command ?? ''].flat().join(' ');
    for (const hook of webhooks) {
      expect(hook.url).toBe(`http://api:${service('api').environment?.API_PORT}/admin/alerts`);
      expect(hook.http_config.authorization.credentials_file).toBe('/alertmanager/admin_token');
      expect(command).toContain(`> ${hook.http_config.authorization.credentials_file}`);
    }
    expect(service('alertmanager').environment?.ADMIN_TOKEN).toBe(service('api').environment?.ADMIN_TOKEN);
  });
});

const datasourcesSchema = z.object({
  apiVersion: z.literal(1),
  datasources: z.array(z.object({ name: z.string(), uid: z.string(), type: z.string(), url: z.string() }).passthrough()),
});
const providersSchema = z.object({
  apiVersion: z.literal(1),
  providers: z.array(z.object({ name: z.string(), type: z.literal('file'), options: z.object({ path: z.string() }) }).passthrough()),
});

describe('deploy/grafana/provisioning (M1.4)', () => {
  it('provisions Prometheus (uid prometheus) and AlertManager as datasources', () => {
    const { datasources } = readYaml('deploy/grafana/provisioning/datasources/prometheus.yml', datasourcesSchema);
    expect(datasources.map((d) => [d.type, d.uid, d.url])).toEqual([
      ['prometheus', 'prometheus', 'http://prometheus:9090'],
      ['alertmanager', 'alertmanager', 'http://alertmanager:9093'],
    ]);
  });

  it('loads dashboards from the folder compose mounts deploy/grafana/dashboards at', () => {
    const { providers } = readYaml('deploy/grafana/provisioning/dashboards/dashboards.yml', providersSchema);
    const mount = bindMounts(service('grafana')).find((m) => m.host === 'deploy/grafana/dashboards');
    expect(providers.map((p) => p.options.path)).toEqual([mount?.container]);
    expect(existsSync(path.join(ROOT, 'deploy/grafana/dashboards/billing.json'))).toBe(true);
  });
});
