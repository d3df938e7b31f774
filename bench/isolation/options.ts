/**
 * What the isolation benchmark runs: its flags, the scenarios, the request bodies and the
 * issue-7 targets. A scenario is a flood (or none) that runs while a victim tenant measures its
 * own requests, once per `--victim-connections` value.
 */
import { parseArgs } from 'node:util';
import { MODEL } from '../gateway/options';

/** A tiny non-streaming chat completion: the victim's request, and the chat floods'. */
export const TINY_CHAT_BODY = { model: MODEL, max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] };

export const ScenarioName = {
  solo: 'solo',
  healthz: 'healthz',
  refusal: 'refusal',
  rateLimited: 'rate-limited',
  paying: 'paying',
} as const;
export type ScenarioName = (typeof ScenarioName)[keyof typeof ScenarioName];

export const TARGETS = {
  /** Refusals/s under the out-of-quota flood, as a share of /healthz responses/s under the /healthz flood. */
  refusalRateShareOfHealthz: 0.5,
  refusalP99Ms: 10,
  /** Victim P50 under the refusal flood, at most this times its P50 under the /healthz flood. */
  victimP50RefusalVsHealthz: 1.3,
  /** Victim P50 under the paying flood (fairness on), at most this times its solo P50. */
  victimP50PayingVsSolo: 2,
} as const;

export const REQUEST_TIMEOUT_S = 30;

export interface IsolationOptions {
  /** Seconds of each victim measurement. @default 10 */
  durationS: number;
  /** The victim's closed-loop connections; one measurement per value. @default [1, 5] */
  victimConnections: number[];
  /** Connections of the /healthz, refusal and rate-limited floods. @default 50 */
  floodConnections: number;
  /** Connections of the paying tenant's flood. @default 100 */
  payingConnections: number;
  /** Seconds a flood runs before the victim starts measuring. @default 2 */
  rampS: number;
  /** The scenarios to run, in order. @default all */
  scenarios: ScenarioName[];
  /** The key's rpm_limit in the rate-limited scenario. @default 60 */
  rpmLimit: number;
  keepData: boolean;
}

export function parseIsolationOptions(args?: string[]): IsolationOptions {
  const { values: cli } = parseArgs({
    args,
    options: {
      duration: { type: 'string', default: '10' },
      'victim-connections': { type: 'string', default: '1,5' },
      'flood-connections': { type: 'string', default: '50' },
      'paying-connections': { type: 'string', default: '100' },
      ramp: { type: 'string', default: '2' },
      scenarios: { type: 'string', default: Object.values(ScenarioName).join(',') },
      'rpm-limit': { type: 'string', default: '60' },
      'keep-data': { type: 'boolean', default: false },
    },
  });
  const known = new Set<string>(Object.values(ScenarioName));
  const scenarios = cli.scenarios.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const unknown = scenarios.filter((s) => !known.has(s));
  if (unknown.length > 0) throw new Error(`unknown scenario(s) ${unknown.join(', ')}; known: ${[...known].join(', ')}`);
  const positive = (name: string, v: number): number => {
    if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} must be a positive number`);
    return v;
  };
  return {
    durationS: positive('duration', Number(cli.duration)),
    victimConnections: cli['victim-connections'].split(',').map((c) => positive('victim-connections', Number(c))),
    floodConnections: positive('flood-connections', Number(cli['flood-connections'])),
    payingConnections: positive('paying-connections', Number(cli['paying-connections'])),
    rampS: Number(cli.ramp),
    scenarios: scenarios as ScenarioName[],
    rpmLimit: positive('rpm-limit', Number(cli['rpm-limit'])),
    keepData: cli['keep-data'],
  };
}
