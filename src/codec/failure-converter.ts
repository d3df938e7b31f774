/**
 * The failure converter of every Temporal client and worker of the app (DataConverter
 * `failureConverterPath`): Temporal's default converter, but with error messages and stack
 * traces moved into the failure's encoded attributes, a payload, so the payload codec
 * (./payload-codec.ts) encrypts them like every other payload. Failures written without it
 * (older histories) still convert: their plain message is read as before.
 *
 * This file is also bundled into the workflow sandbox (the workflow's own failures are
 * converted there): it must stay deterministic, with no Node built-ins.
 */
import { DefaultFailureConverter } from '@temporalio/common';

export const failureConverter = new DefaultFailureConverter({ encodeCommonAttributes: true });
