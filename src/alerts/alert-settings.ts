/**
 * Budget alert settings of a tenant or an API key, and the threshold arithmetic.
 *
 * A threshold T (percent, 1-1000) of a limit L is reached when used * 100 >= T * L,
 * computed on BigInt: used and L are exact micros up to 2^53 - 1, and their products
 * with 100 or 1000 are not exact as doubles. A zero limit reaches nothing (there is no
 * quota to alert about).
 */

/** Thresholds a tenant or key gets unless it sets its own: at 80 % and at 100 % of its quota or budget. */
export const DEFAULT_ALERT_THRESHOLDS_PERCENT: readonly number[] = Object.freeze([80, 100]);

/** Allowed threshold range: above 100 % alerts on overage (a settled cost above its reservation). */
export const MIN_ALERT_THRESHOLD_PERCENT = 1;
export const MAX_ALERT_THRESHOLD_PERCENT = 1000;
/** At most this many thresholds per tenant or key. */
export const MAX_ALERT_THRESHOLDS = 10;

export interface AlertSettings {
  /** Where alerts are POSTed; null = none (a key then alerts to its tenant's URL). */
  webhookUrl: string | null;
  /** Strictly increasing, each within MIN/MAX_ALERT_THRESHOLD_PERCENT. */
  thresholdsPercent: number[];
}

export const DEFAULT_ALERT_SETTINGS: Readonly<AlertSettings> = Object.freeze({ webhookUrl: null, thresholdsPercent: [...DEFAULT_ALERT_THRESHOLDS_PERCENT] });

/** The thresholds of `thresholdsPercent` that `usedMicros` of `limitMicros` has reached. */
export function thresholdsReached(usedMicros: number, limitMicros: number, thresholdsPercent: readonly number[]): number[] {
  if (limitMicros <= 0) return [];
  const used100 = BigInt(usedMicros) * 100n;
  const limit = BigInt(limitMicros);
  return thresholdsPercent.filter((t) => used100 >= BigInt(t) * limit);
}
