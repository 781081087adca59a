import type { Phase, Side, SourceState } from '../phases.js';
import { ERRORS, type ErrorKey } from './codes.js';

export interface FerryErrorInit {
  phase?: Phase | undefined;
  side?: Side | undefined;
  sourceState?: SourceState | undefined;
  /** Overrides the registry's title when the message can say more (still short and factual). */
  message?: string;
  hint?: string;
  /** Technical detail: failing call, file, quoted CRIU lines. */
  detail?: string;
  cause?: unknown;
}

/** The one error type Ferry reports. Match on `code` (or `key`), never on message text. */
export class FerryError extends Error {
  readonly key: ErrorKey;
  readonly code: string;
  /** Filled in by the phase that saw the error when the thrower could not know it. */
  phase: Phase | undefined;
  side: Side | undefined;
  readonly retryable: boolean;
  sourceState: SourceState | undefined;
  readonly hint: string;
  readonly detail: string | undefined;
  /** Errors met while rolling back after this one; they never replace it. */
  readonly rollbackErrors: Error[] = [];

  constructor(key: ErrorKey, init: FerryErrorInit = {}) {
    const spec = ERRORS[key];
    super(init.message ?? spec.title, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'FerryError';
    this.key = key;
    this.code = spec.code;
    this.phase = init.phase;
    this.side = init.side;
    this.retryable = spec.retryable;
    this.sourceState = init.sourceState;
    this.hint = init.hint ?? spec.hint;
    this.detail = init.detail;
  }

  /** A plain object for JSON output and for the gRPC trailer. */
  toJSON(): SerializedFerryError {
    return {
      code: this.code,
      key: this.key,
      message: this.message,
      hint: this.hint,
      phase: this.phase,
      side: this.side,
      retryable: this.retryable,
      sourceState: this.sourceState,
      detail: this.detail,
      rollbackErrors: this.rollbackErrors.map((e) => e.message),
    };
  }
}

export interface SerializedFerryError {
  code: string;
  key: ErrorKey;
  message: string;
  hint: string;
  phase?: Phase | undefined;
  side?: Side | undefined;
  retryable: boolean;
  sourceState?: SourceState | undefined;
  detail?: string | undefined;
  rollbackErrors?: string[];
}

export function isFerryError(e: unknown, key?: ErrorKey): e is FerryError {
  return e instanceof FerryError && (key === undefined || e.key === key);
}

/** Wraps anything into a FerryError, keeping a FerryError as it is (the first cause wins). */
export function asFerryError(e: unknown, key: ErrorKey, init: FerryErrorInit = {}): FerryError {
  if (e instanceof FerryError) return e;
  const detail = init.detail ?? (e instanceof Error ? e.message : String(e));
  return new FerryError(key, { ...init, detail, cause: e });
}

/** A failed system call: the errno read right after the call. Phases wrap it in a FerryError. */
export class SystemCallError extends Error {
  constructor(
    readonly syscall: string,
    readonly errno: number,
    readonly errnoName: string,
    context?: string,
  ) {
    super(`${syscall}${context ? ` (${context})` : ''} failed: ${errnoName} (${errno})`);
    this.name = 'SystemCallError';
  }
}
