/** FerryError <-> gRPC status: the status code from the registry, the whole error in a binary trailer. */
import { Metadata, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { ERRORS, keyForCode } from './codes.js';
import { FerryError, type SerializedFerryError } from './ferry-error.js';

const TRAILER = 'ferry-error-bin';

/** What a server returns for an error: a FerryError keeps its code; anything else is a generic INTERNAL. */
export function toStatus(e: unknown): Partial<StatusObject> {
  const fe = e instanceof FerryError ? e : new FerryError('INTERNAL', { detail: 'see the agent log' });
  const metadata = new Metadata();
  metadata.set(TRAILER, Buffer.from(JSON.stringify(fe.toJSON())));
  return { code: ERRORS[fe.key].grpc, details: `${fe.code}: ${fe.message}`, metadata };
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
