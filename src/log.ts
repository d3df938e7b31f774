/**
 * pino JSON logger. Secrets and prompts never reach logs: the redaction list
 * below removes them even if a caller passes a whole request or header object.
 */
import pino from 'pino';

const REDACTED_PATHS = [
  'authorization',
  '*.authorization',
  'headers.authorization',
  'req.headers.authorization',
  'apiKey',
  '*.apiKey',
  'key',
  '*.key',
  'adminToken',
  'messages',
  '*.messages',
  'prompt',
  '*.prompt',
  'password',
  '*.password',
  'databaseUrl',
  'redisUrl',
  // Budget alert signing secrets (src/alerts/alert-secrets.ts): never logged, even by mistake.
  'secret',
  '*.secret',
  'alertWebhookSecret',
  '*.alertWebhookSecret',
  'alert_webhook_secret',
  '*.alert_webhook_secret',
];

export type Logger = pino.Logger;

/** A JSON logger to stdout, or to `destination` (tests read what was logged). */
export function createLogger(level: string, name: string, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    name,
    level,
    base: { service: name },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination ? pino(options, destination) : pino(options);
}
