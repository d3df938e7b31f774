/**
 * What a process started, stopped in reverse order: the embedded stack, the roles
 * and `npm start` each keep one, so a failed start or a signal leaves nothing running.
 */
import type { Logger } from './log';

export class ShutdownList {
  private readonly steps: Array<() => Promise<void>> = [];

  constructor(private readonly log: Pick<Logger, 'error'> | undefined) {}

  /** Registers how to stop something that has just started. */
  push(step: () => Promise<void>): void {
    this.steps.push(step);
  }

  /** Runs every step once, newest first; a failing step is logged and the rest still run. */
  async stopAll(): Promise<void> {
    for (let step = this.steps.pop(); step; step = this.steps.pop()) {
      await step().catch((err: unknown) => this.log?.error({ err }, 'shutdown step failed'));
    }
  }
}
