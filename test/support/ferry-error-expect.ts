/** Assertions on FerryError codes for the unit tests: match on the registry key and code, never on message text. */
import { expect } from 'vitest';
import { ERRORS, type ErrorKey } from '../../shared/errors/codes.js';
import { FerryError } from '../../shared/errors/ferry-error.js';

function checked(thrown: unknown, key: ErrorKey): FerryError {
  // Comparing the key (or the whole foreign error) shows what was thrown instead when it is not the one expected.
  expect(thrown instanceof FerryError ? thrown.key : thrown).toBe(key);
  const fe = thrown as FerryError;
  expect(fe.code).toBe(ERRORS[key].code);
  return fe;
}

/** Runs `fn`, which must throw the FerryError `key`; returns it for further checks. */
export function expectFerryError(fn: () => unknown, key: ErrorKey): FerryError {
  try {
    fn();
  } catch (e) {
    return checked(e, key);
  }
  throw new Error(`expected ${key} (${ERRORS[key].code}), nothing was thrown`);
}

/** Awaits `p`, which must reject with the FerryError `key`; returns it for further checks. */
export async function expectFerryRejection(p: Promise<unknown>, key: ErrorKey): Promise<FerryError> {
  try {
    await p;
  } catch (e) {
    return checked(e, key);
  }
  throw new Error(`expected ${key} (${ERRORS[key].code}), the promise resolved`);
}
