/**
 * Whether the Temporal server the isolation benchmark starts dispatches task queues fairly by
 * tenant, and whether the benchmark can restart the stack with fairness off to compare.
 *
 * Read from the code, not assumed: the embedded server is fair when src/embedded/temporal.ts passes
 * `matching.enableFairness=true` (its exported TEMPORAL_DYNAMIC_CONFIG); fairness can be turned off
 * when src/config.ts has a setting whose name contains FAIRNESS that parses to false. A server
 * named by TEMPORAL_ADDRESS is not ours to restart: its fairness is unknown.
 */
import type { Config } from '../../src/config';
import { loadConfig } from '../../src/config';
import * as embeddedTemporal from '../../src/embedded/temporal';

export interface FairnessState {
  /** Fairness on the server as started: true, false, or undefined (unknown). */
  on: boolean | undefined;
  /** The environment that starts the stack with fairness off, when the code has such a setting. */
  offEnv?: Record<string, string>;
  note: string;
}

export function fairnessState(config: Readonly<Config>): FairnessState {
  if (config.TEMPORAL_ADDRESS) return { on: undefined, note: `Temporal at TEMPORAL_ADDRESS=${config.TEMPORAL_ADDRESS}: its fairness setting is unknown and it is not restarted` };
  const dynamic = (embeddedTemporal as unknown as Record<string, unknown>).TEMPORAL_DYNAMIC_CONFIG;
  const on = typeof dynamic === 'object' && dynamic !== null && (dynamic as Record<string, unknown>)['matching.enableFairness'] === true;
  const setting = Object.keys(config).find((k) => /FAIRNESS/i.test(k));
  if (setting === undefined) {
    return { on, note: `embedded Temporal with fairness ${on ? 'on' : 'off'} (src/embedded/temporal.ts); no setting in src/config.ts turns it off, so only "${on ? 'on' : 'off'}" is measured` };
  }
  for (const value of ['false', '0', 'off']) {
    try {
      const parsed = (loadConfig({ ...process.env, [setting]: value }) as unknown as Record<string, unknown>)[setting];
      if (parsed === false || parsed === 0 || parsed === 'off') {
        const current = (config as unknown as Record<string, unknown>)[setting];
        const onNow = current !== false && current !== 0 && current !== 'off' && on;
        return { on: onNow, offEnv: { [setting]: value }, note: `embedded Temporal with fairness ${onNow ? 'on' : 'off'}; ${setting}=${value} restarts it with fairness off` };
      }
    } catch {
      // not a value this setting accepts
    }
  }
  return { on, note: `embedded Temporal with fairness ${on ? 'on' : 'off'}; ${setting} exists but accepts none of false, 0, off: only this setting is measured` };
}
