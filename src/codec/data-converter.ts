/**
 * The one DataConverter of the app's Temporal clients and workers (the API's client, the
 * worker, the test helpers, the history recorder, the replay test): the encrypting payload
 * codec and a failure converter that encrypts error messages and stack traces too.
 */
import type { DataConverter } from '@temporalio/common';
import type { CodecKeyring } from './keyring';
import { AesGcmPayloadCodec } from './payload-codec';

/** Absolute path of ./failure-converter (for DataConverter.failureConverterPath and bundleWorkflowCode). */
export const FAILURE_CONVERTER_PATH = require.resolve('./failure-converter');

export function billingDataConverter(keyring: CodecKeyring): DataConverter {
  return { payloadCodecs: [new AesGcmPayloadCodec(keyring)], failureConverterPath: FAILURE_CONVERTER_PATH };
}
