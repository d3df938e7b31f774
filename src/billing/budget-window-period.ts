/**
 * Budget window periods: where the calendar window containing an instant starts and ends
 * in an IANA time zone (issue 12). A window is calendar-aligned, not rolling: `daily` is
 * local midnight to local midnight, `weekly` an ISO week (Monday 00:00 to the next
 * Monday), `monthly` the 1st 00:00 to the next 1st. Boundaries are computed from the zone's
 * own rules (Intl, the ICU time zone data Node ships), so a daily window in Asia/Tokyo
 * turns over at 15:00 UTC, and a window across a DST change is 23 or 25 hours long.
 *
 * Pure functions of (period, zone, instant): the admission computes the current window
 * from its own clock, and the same function recomputes any past window from the instant a
 * ledger entry was reserved, so nothing depends on a reset having run.
 */

export const BUDGET_PERIODS = ['daily', 'weekly', 'monthly'] as const;
export type BudgetPeriod = (typeof BUDGET_PERIODS)[number];

/** Thrown for a time zone that is not an IANA zone name this runtime knows. */
export class InvalidTimeZoneError extends Error {
  override name = 'InvalidTimeZoneError';

  constructor(readonly timeZone: unknown) {
    super(`budget_timezone must be an IANA time zone name such as "UTC" or "Europe/Berlin", got ${JSON.stringify(timeZone)}`);
  }
}

/** Zone names: letters, digits and `_ + -`, in `/`-separated parts (rejects offsets like "+09:00" and odd input before ICU sees it). */
const ZONE_NAME = /^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+){0,2}$/;

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
    formatters.set(timeZone, f);
  }
  return f;
}

/**
 * The zone's canonical name (`resolvedOptions().timeZone`, e.g. "utc" -> "UTC"), or
 * InvalidTimeZoneError. Stored canonical, so two spellings of one zone are one window.
 */
export function canonicalTimeZone(timeZone: unknown): string {
  if (typeof timeZone !== 'string' || timeZone.length > 64 || !ZONE_NAME.test(timeZone)) throw new InvalidTimeZoneError(timeZone);
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone }).resolvedOptions().timeZone;
  } catch {
    throw new InvalidTimeZoneError(timeZone);
  }
}

interface LocalDate {
  year: number;
  month: number; // 1-12
  day: number;
}

/** The wall-clock fields of `instantMs` in `timeZone`. */
function localParts(instantMs: number, timeZone: string): LocalDate & { hour: number; minute: number; second: number } {
  const parts: Record<string, number> = {};
  for (const p of formatter(timeZone).formatToParts(new Date(instantMs))) {
    if (p.type !== 'literal') parts[p.type] = Number(p.value);
  }
  return { year: parts.year!, month: parts.month!, day: parts.day!, hour: parts.hour!, minute: parts.minute!, second: parts.second! };
}

/** Local time minus UTC at `instantMs`, in ms (whole seconds: Intl prints no milliseconds). */
function offsetMs(instantMs: number, timeZone: string): number {
  const p = localParts(instantMs, timeZone);
  const asUtc = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
  return asUtc - Math.floor(instantMs / 1000) * 1000;
}

/**
 * The first instant of the local day `date` in `timeZone`: local midnight, or, in a zone
 * whose DST change skips midnight, the first instant that day exists.
 */
function startOfLocalDay(date: LocalDate, timeZone: string): number {
  const wall = Date.UTC(date.year, date.month - 1, date.day);
  // Two passes settle the offset (it can differ between the guess and the answer).
  let t = wall - offsetMs(wall, timeZone);
  t = wall - offsetMs(t, timeZone);
  // Midnight skipped by a DST change: t lands on the previous local day; step to the first hour of this one.
  for (let i = 0; i < 4 && localDayNumber(localParts(t, timeZone)) < localDayNumber(date); i++) t += 3_600_000;
  return t;
}

/** Days since 1970-01-01 of a calendar date (proleptic Gregorian), for comparisons and weekdays. */
function localDayNumber(date: LocalDate): number {
  return Math.floor(Date.UTC(date.year, date.month - 1, date.day) / 86_400_000);
}

function addDays(date: LocalDate, days: number): LocalDate {
  const d = new Date(Date.UTC(date.year, date.month - 1, date.day + days));
  return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate() };
}

export interface WindowBounds {
  /** Inclusive, epoch ms. */
  startMs: number;
  /** Exclusive, epoch ms: the next window's start. */
  endMs: number;
}

/** The window of `period` in `timeZone` that contains `instantMs`. */
export function windowBounds(period: BudgetPeriod, timeZone: string, instantMs: number): WindowBounds {
  if (!Number.isSafeInteger(instantMs)) throw new RangeError(`instantMs must be an integer, got ${instantMs}`);
  const today = localParts(instantMs, timeZone);
  let first: LocalDate;
  let next: LocalDate;
  switch (period) {
    case 'daily':
      first = today;
      next = addDays(today, 1);
      break;
    case 'weekly': {
      // 1970-01-01 was a Thursday: (dayNumber + 3) mod 7 is 0 on Mondays (ISO weeks start on Monday).
      const sinceMonday = (((localDayNumber(today) + 3) % 7) + 7) % 7;
      first = addDays(today, -sinceMonday);
      next = addDays(first, 7);
      break;
    }
    case 'monthly':
      first = { year: today.year, month: today.month, day: 1 };
      next = today.month === 12 ? { year: today.year + 1, month: 1, day: 1 } : { year: today.year, month: today.month + 1, day: 1 };
      break;
    default:
      throw new RangeError(`unknown budget period ${String(period)}`);
  }
  return { startMs: startOfLocalDay(first, timeZone), endMs: startOfLocalDay(next, timeZone) };
}
