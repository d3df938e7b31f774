/**
 * The HTTP side of a relayed event stream: the SSE headers, sent once, when the first event
 * is written. Until then nothing is sent, so an error before any output can still be answered
 * as a plain JSON error (the relay writers check `started`).
 */
import type { Response } from 'express';

export interface EventStreamResponse {
  /** Sends the status and SSE headers unless already sent. */
  start(): void;
  /** Whether the headers went out (the client has seen a 200). */
  readonly started: boolean;
}

export function eventStreamResponse(res: Response): EventStreamResponse {
  let started = false;
  return {
    start(): void {
      if (started) return;
      started = true;
      res.status(200);
      res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
      res.setHeader('Cache-Control', 'no-cache');
      res.setHeader('Connection', 'keep-alive');
      res.flushHeaders();
    },
    get started(): boolean {
      return started;
    },
  };
}
