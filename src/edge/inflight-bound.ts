/**
 * The per-process bound on durable requests in flight (MAX_INFLIGHT_REQUESTS). Past
 * it, a request is answered 503 at once instead of queueing for seconds behind the
 * workflows this process already waits on: overload is answered, not queued.
 */
import type { BillingMetrics } from '../metrics';

export class InflightBound {
  private inflight = 0;

  constructor(
    readonly limit: number,
    private readonly metrics: Pick<BillingMetrics, 'inflightRequests' | 'inflightLimit' | 'shedRequests'>,
  ) {
    metrics.inflightLimit.set(limit);
  }

  /** Takes a slot; false (and counted as shed) when the process is at its bound. */
  tryAcquire(): boolean {
    if (this.inflight >= this.limit) {
      this.metrics.shedRequests.inc();
      return false;
    }
    this.inflight += 1;
    this.metrics.inflightRequests.set(this.inflight);
    return true;
  }

  release(): void {
    this.inflight = Math.max(0, this.inflight - 1);
    this.metrics.inflightRequests.set(this.inflight);
  }
}
