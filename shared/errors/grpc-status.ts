/** FerryError <-> gRPC status: the status code from the registry, the whole error in a binary trailer. */
import { Metadata, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { truncateText } from '../bounded-text.js';
import { ERRORS, keyForCode } from './codes.js';
import { FerryError, type SerializedFerryError } from './ferry-error.js';

const TRAILER = 'ferry-error-bin';

/**
 * The trailer's share of each field. The whole trailer stays under 4 KiB of JSON (about 5.3 KiB in base64),
 * far below the 64 KiB header block HTTP/2 allows: an error carrying a peer's long string still travels, and
 * the connection's later calls are not held up behind it.
 */
const TRAILER_BYTES = { message: 256, hint: 512, detail: 1024, rollbackError: 256 } as const;
const TRAILER_ROLLBACK_ERRORS = 4;

/** The error as it travels: every free-text field cut to its share. */
export function boundedForTrailer(s: SerializedFerryError): SerializedFerryError {
  const rollbackErrors = s.rollbackErrors ?? [];
  const kept = rollbackErrors.slice(0, TRAILER_ROLLBACK_ERRORS).map((m) => truncateText(m, TRAILER_BYTES.rollbackError));
  if (rollbackErrors.length > kept.length) kept.push(`... and ${rollbackErrors.length - kept.length} more`);
  return {
    ...s,
    message: truncateText(s.message, TRAILER_BYTES.message),
    hint: truncateText(s.hint, TRAILER_BYTES.hint),
    detail: s.detail === undefined ? undefined : truncateText(s.detail, TRAILER_BYTES.detail),
    rollbackErrors: kept,
  };
}

/** What a server returns for an error: a FerryError keeps its code; anything else is a generic INTERNAL. */
export function toStatus(e: unknown): Partial<StatusObject> {
  const fe = e instanceof FerryError ? e : new FerryError('INTERNAL', { detail: 'see the agent log' });
  const bounded = boundedForTrailer(fe.toJSON());
  const metadata = new Metadata();
  metadata.set(TRAILER, Buffer.from(JSON.stringify(bounded)));
  return { code: ERRORS[fe.key].grpc, details: `${fe.code}: ${bounded.message}`, metadata };
}

/** Rebuilds the peer's FerryError from a failed call; transport failures become `fallback`. */
export function fromServiceError(e: unknown, fallback: FerryError): FerryError {
  const se = (e ?? {}) as Partial<ServiceError>;
  const raw = se.metadata?.get(TRAILER)[0];
  if (raw instanceof Buffer) {
    try {
      const s = JSON.parse(raw.toString('utf8')) as SerializedFerryError;
      const key = keyForCode(s.code);
      if (key) {
        const fe = new FerryError(key, { message: s.message, hint: s.hint, phase: s.phase, side: s.side, sourceState: s.sourceState, detail: s.detail, cause: e });
        fe.rollbackErrors.push(...(s.rollbackErrors ?? []).map((msg) => new Error(msg)));
        return fe;
      }
    } catch {
      /* fall through: a malformed trailer is a transport-level failure */
    }
  }
  return fallback;
}
