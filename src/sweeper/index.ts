/** The reservation sweeper: settles pending reservations whose workflow no longer runs (docs/sweeper.md). */
export { createReservationSweeper, SweepOutcome, type ReservationSweeper, type ReservationSweeperDeps, type SweepSummary, type SweeperSettings, type SweptRow } from './reservation-sweeper';
export { createSweeperActivities } from './sweep-activity';
