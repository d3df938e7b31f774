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
];

export type Logger = pino.Logger;

export function createLogger(level: string, name: string): Logger {
  return pino({
    name,
    level,
    base: { service: name },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}
