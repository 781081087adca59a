/** The harness's one bounded poll: every wait of a test or of the soak has a deadline and says what it waited for. */

const POLL_MS = 20;

/** Polls cond until it returns something other than undefined/null/false, and returns that. Throws a
 * "timed out ... waiting for <what>" error after timeoutMs, or the abort reason. */
export async function waitFor<T>(
  cond: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  timeoutMs: number,
  what: string | (() => string),
  signal?: AbortSignal,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    signal?.throwIfAborted();
    const v = await cond();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`);
    await new Promise((wake) => setTimeout(wake, POLL_MS));
  }
}

/** Polls until cond() holds; throws naming `what` after timeoutMs. */
export async function eventually(cond: () => boolean, timeoutMs: number, what: string | (() => string)): Promise<void> {
  await waitFor(cond, timeoutMs, what);
}
