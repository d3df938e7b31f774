/** Calendar windows in IANA zones (issue 12): boundaries worked out by hand from each zone's rules. */
import { canonicalTimeZone, InvalidTimeZoneError, windowBounds, type BudgetPeriod } from '../../src/billing/budget-window-period';

const iso = (ms: number): string => new Date(ms).toISOString();
function bounds(period: BudgetPeriod, zone: string, at: string): [string, string] {
  const b = windowBounds(period, zone, Date.parse(at));
  return [iso(b.startMs), iso(b.endMs)];
}

describe('windowBounds', () => {
  it('daily in UTC: midnight to midnight, the boundary instant belongs to the new window', () => {
    expect(bounds('daily', 'UTC', '2026-12-01T23:59:59.999Z')).toEqual(['2026-12-01T00:00:00.000Z', '2026-12-02T00:00:00.000Z']);
    expect(bounds('daily', 'UTC', '2026-12-02T00:00:00.000Z')).toEqual(['2026-12-02T00:00:00.000Z', '2026-12-03T00:00:00.000Z']);
  });

  it('daily in Asia/Tokyo (UTC+9) turns over at 15:00 UTC', () => {
    expect(bounds('daily', 'Asia/Tokyo', '2026-12-01T14:59:59.999Z')).toEqual(['2026-11-30T15:00:00.000Z', '2026-12-01T15:00:00.000Z']);
    expect(bounds('daily', 'Asia/Tokyo', '2026-12-01T15:00:00.000Z')).toEqual(['2026-12-01T15:00:00.000Z', '2026-12-02T15:00:00.000Z']);
  });

  it('weekly is the ISO week: Monday 00:00 to the next Monday, also when the instant is a Sunday or a Monday', () => {
    // 2026-12-01 is a Tuesday; 2026-12-06 a Sunday; 2026-12-07 a Monday.
    expect(bounds('weekly', 'UTC', '2026-12-01T10:00:00.000Z')).toEqual(['2026-11-30T00:00:00.000Z', '2026-12-07T00:00:00.000Z']);
    expect(bounds('weekly', 'UTC', '2026-12-06T23:59:59.000Z')).toEqual(['2026-11-30T00:00:00.000Z', '2026-12-07T00:00:00.000Z']);
    expect(bounds('weekly', 'UTC', '2026-12-07T00:00:00.000Z')).toEqual(['2026-12-07T00:00:00.000Z', '2026-12-14T00:00:00.000Z']);
    // Monday 2026-12-07 00:30 in Tokyo is still Sunday in UTC.
    expect(bounds('weekly', 'Asia/Tokyo', '2026-12-06T15:30:00.000Z')).toEqual(['2026-12-06T15:00:00.000Z', '2026-12-13T15:00:00.000Z']);
  });

  it('monthly: the 1st to the next 1st, across the year end and in February of a leap year', () => {
    expect(bounds('monthly', 'UTC', '2026-12-31T23:59:59.999Z')).toEqual(['2026-12-01T00:00:00.000Z', '2027-01-01T00:00:00.000Z']);
    expect(bounds('monthly', 'UTC', '2028-02-29T12:00:00.000Z')).toEqual(['2028-02-01T00:00:00.000Z', '2028-03-01T00:00:00.000Z']);
  });

  it('across a DST change: a 23-hour day and a month whose offset changes (Europe/Berlin, America/New_York)', () => {
    // Berlin: CET (+1) until 2026-03-29 01:00 UTC, then CEST (+2).
    expect(bounds('monthly', 'Europe/Berlin', '2026-03-15T10:00:00.000Z')).toEqual(['2026-02-28T23:00:00.000Z', '2026-03-31T22:00:00.000Z']);
    // New York: EST (-5) until 2026-03-08 07:00 UTC, then EDT (-4).
    const day = windowBounds('daily', 'America/New_York', Date.parse('2026-03-08T12:00:00.000Z'));
    expect([iso(day.startMs), iso(day.endMs)]).toEqual(['2026-03-08T05:00:00.000Z', '2026-03-09T04:00:00.000Z']);
    expect(day.endMs - day.startMs).toBe(23 * 3600_000);
  });

  it('a day whose midnight does not exist starts at its first instant (America/Santiago skips 00:00-01:00 on 2026-09-06)', () => {
    expect(bounds('daily', 'America/Santiago', '2026-09-06T12:00:00.000Z')).toEqual(['2026-09-06T04:00:00.000Z', '2026-09-07T03:00:00.000Z']);
  });
});

describe('canonicalTimeZone', () => {
  it('accepts IANA names and returns the canonical spelling', () => {
    expect(canonicalTimeZone('UTC')).toBe('UTC');
    expect(canonicalTimeZone('utc')).toBe('UTC');
    expect(canonicalTimeZone('Asia/Tokyo')).toBe('Asia/Tokyo');
    // Two names of one zone (an IANA link) are stored alike, so they name the same windows.
    expect(canonicalTimeZone('America/Argentina/Buenos_Aires')).toBe(canonicalTimeZone('America/Buenos_Aires'));
  });

  it.each([['Mars/Olympus'], ['+09:00'], [''], ['Europe/../etc'], [42], [null], ['A'.repeat(70)]])('refuses %p', (zone) => {
    expect(() => canonicalTimeZone(zone)).toThrow(InvalidTimeZoneError);
  });
});
