/**
 * The usage exporter (docs/usage-export.md): one run sends each configured destination
 * what it has not acknowledged, oldest first, in batches, until it is caught up or the run's
 * batch budget is spent. Destinations run side by side and apart: one that is down records
 * its failure, waits out its backoff and keeps its place (its entries stay due), while the
 * others go on. Delivery is at least once (a run that dies after the destination answered
 * resends); the destination's dedupe on the entry's stable id makes it exactly once.
 */
import type { Logger } from '../log';
import type { ExportDestination, ExportEvent, SendResult } from './destinations';
import type { ExportRepository, ReconciliationResult } from './export-repository';

export interface ExporterSettings {
  /** Most batches one run sends to one destination (the rest waits for the next run). */
  maxBatchesPerRun: number;
  /** Entries per batch (each destination's own limit caps it too). */
  batchSize: number;
  /** Backoff of a failing destination: doubles per consecutive failed run, from initial to max. */
  retryInitialSeconds: number;
  retryMaxSeconds: number;
  /** How long a run holds a destination (no second run sends its batches meanwhile). */
  leaseSeconds: number;
  /** Outbox rows every destination acknowledged are deleted this many days after their commit. */
  retentionDays: number;
}

export type DestinationOutcome = 'caught_up' | 'more' | 'failed' | 'backoff' | 'busy';

export interface DestinationRunSummary {
  destination: string;
  outcome: DestinationOutcome;
  delivered: number;
  duplicates: number;
  /** Entries newly held (past the dedupe window, not resent). */
  held: number;
  batches: number;
  error?: string;
}

export interface ExportRunSummary {
  destinations: DestinationRunSummary[];
  /** Outbox rows past the retention that every destination acknowledged, deleted by this run. */
  pruned: number;
}

/** What the exporter tells the metrics (src/metrics.ts createUsageExportMetrics). */
export interface ExportCounters {
  sent(destination: string, result: 'delivered' | 'duplicate' | 'failed' | 'held', n: number): void;
}

export interface ExporterDeps {
  repository: ExportRepository;
  destinations: readonly ExportDestination[];
  settings: ExporterSettings;
  counters?: ExportCounters;
  log: Pick<Logger, 'info' | 'warn'>;
  /** Called between batches (the activity heartbeats). */
  heartbeat?: () => void;
}

export function createUsageExporter(deps: ExporterDeps) {
  const { repository: repo, settings } = deps;

  async function runOne(dest: ExportDestination): Promise<DestinationRunSummary> {
    const summary: DestinationRunSummary = { destination: dest.name, outcome: 'caught_up', delivered: 0, duplicates: 0, held: 0, batches: 0 };
    if (!(await repo.backoffOver(dest.name))) return { ...summary, outcome: 'backoff' };
    if (!(await repo.acquireLease(dest.name, settings.leaseSeconds))) return { ...summary, outcome: 'busy' };
    try {
      if (dest.dedupeWindowSeconds !== undefined) {
        summary.held = await repo.holdStale(dest.name, dest.dedupeWindowSeconds);
        if (summary.held > 0) {
          deps.counters?.sent(dest.name, 'held', summary.held);
          deps.log.warn({ destination: dest.name, held: summary.held }, 'usage export: entries past the dedupe window held for reconciliation');
        }
      }
      const size = Math.min(settings.batchSize, dest.maxBatch);
      // Stop well inside the lease: past it another run may take the destination.
      const stopAt = Date.now() + (settings.leaseSeconds * 1000) / 2;
      for (;;) {
        if (summary.batches >= settings.maxBatchesPerRun || Date.now() > stopAt) return { ...summary, outcome: 'more' };
        const batch = await repo.due(dest.name, size);
        if (batch.length === 0) break;
        summary.batches += 1;
        // The attempt is recorded before the send: the dedupe window of a destination runs from the first one.
        await repo.recordAttempt(dest.name, batch.map((e) => e.ledgerId));
        const result = await dest.send(batch, deps.heartbeat);
        await record(dest, batch, result);
        summary.delivered += result.delivered.length;
        summary.duplicates += result.duplicates.length;
        deps.heartbeat?.();
        if (result.error !== undefined) {
          const state = await repo.recordFailure(dest.name, result.error, { initialSeconds: settings.retryInitialSeconds, maxSeconds: settings.retryMaxSeconds });
          deps.log.warn({ destination: dest.name, err: result.error, failures: state.consecutiveFailures, nextAttemptAt: state.nextAttemptAt }, 'usage export: destination failed; it keeps its place');
          return { ...summary, outcome: 'failed', error: result.error };
        }
        if (batch.length < size) break;
      }
      await repo.recordSuccess(dest.name);
      return summary;
    } finally {
      await repo.releaseLease(dest.name);
    }
  }

  async function record(dest: ExportDestination, batch: ExportEvent[], result: SendResult): Promise<void> {
    await repo.recordAcknowledged(dest.name, result.delivered, 'delivered');
    await repo.recordAcknowledged(dest.name, result.duplicates, 'duplicate');
    deps.counters?.sent(dest.name, 'delivered', result.delivered.length);
    deps.counters?.sent(dest.name, 'duplicate', result.duplicates.length);
    if (result.error !== undefined) {
      const acked = new Set([...result.delivered, ...result.duplicates]);
      const failed = batch.filter((e) => !acked.has(e.ledgerId)).map((e) => e.ledgerId);
      await repo.recordError(dest.name, failed, result.error);
      deps.counters?.sent(dest.name, 'failed', failed.length);
    }
  }

  return {
    destinationNames: (): string[] => deps.destinations.map((d) => d.name),

    /** One run over every destination, side by side; a destination's error is its summary's, never the others'. */
    async run(): Promise<ExportRunSummary> {
      const results = await Promise.all(
        deps.destinations.map((d) =>
          runOne(d).catch((err: unknown): DestinationRunSummary => {
            // Our own failure (the database): the destination keeps its place; the next run retries.
            const message = err instanceof Error ? err.message : String(err);
            deps.log.warn({ destination: d.name, err: message }, 'usage export run failed');
            return { destination: d.name, outcome: 'failed', delivered: 0, duplicates: 0, held: 0, batches: 0, error: message };
          }),
        ),
      );
      // Bounded per run: a first run after a long pause prunes a backlog over several runs.
      const pruned = await repo.prune(deps.destinations.map((d) => d.name), settings.retentionDays, 10_000).catch((err: unknown) => {
        deps.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'usage export outbox prune failed');
        return 0;
      });
      return { destinations: results, pruned };
    },

    /** The daily reconciliation of every destination for `day` (YYYY-MM-DD, UTC; default yesterday). */
    async reconcile(day: string = previousUtcDay(new Date())): Promise<ReconciliationResult[]> {
      const results: ReconciliationResult[] = [];
      for (const d of deps.destinations) results.push(await repo.reconcile(d.name, day));
      const differing = results.filter((r) => r.missing + r.unexpected + r.held > 0);
      if (differing.length > 0) {
        deps.log.warn({ day, differences: differing.map((r) => ({ destination: r.destination, missing: r.missing, unexpected: r.unexpected, held: r.held })) }, 'usage export reconciliation found differences');
      } else deps.log.info({ day, destinations: results.length }, 'usage export reconciled');
      return results;
    },
  };
}

export type UsageExporter = ReturnType<typeof createUsageExporter>;

export function previousUtcDay(now: Date): string {
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - 1)).toISOString().slice(0, 10);
}
