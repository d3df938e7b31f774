/** What a Temporal history shows once decoded with the payload codec (the Web UI's view with the codec server). */
import type { Payload } from '@temporalio/common';
import type { History } from '@temporalio/common/lib/proto-utils';
import type { AesGcmPayloadCodec } from '../../src/codec/payload-codec';

/** Every payload of `history` decoded with `codec`, as UTF-8 text. */
export async function decodedHistoryText(history: History, codec: AesGcmPayloadCodec): Promise<string> {
  const payloads: Payload[] = [];
  const walk = (value: unknown): void => {
    if (value instanceof Uint8Array || typeof value !== 'object' || value === null) return;
    if (Array.isArray(value)) return value.forEach(walk);
    const record = value as Record<string, unknown>;
    if ('metadata' in record && 'data' in record && record.data instanceof Uint8Array) payloads.push(record);
    Object.values(record).forEach(walk);
  };
  walk(history);
  const decoded = await codec.decode(payloads);
  return decoded.map((p) => Buffer.from(p.data ?? new Uint8Array()).toString('utf8')).join('\n');
}
