/**
 * The dests a source agent may connect to (`--allow-dest HOST:PORT`, repeatable): every Migrate and every
 * Check that names a dest is refused unless the dest is on the list, so no caller can make the agent send a
 * task's memory, or even a connection, anywhere else. Entries and requests are compared as text after
 * normalizing (no DNS lookup: a name and its address are different entries). An empty list refuses all.
 */
import { FerryError } from '../shared/errors/ferry-error.js';
import { formatHostPort, parseHostPort } from '../shared/transport/address.js';

/** Longest HOST:PORT worth parsing: a 253-byte name (or a bracketed IPv6 address) and a port. */
const MAX_DEST_CHARS = 253 + 2 + 6;

function normalize(text: string, what: string): string | undefined {
  if (text.length > MAX_DEST_CHARS) return undefined;
  const hp = parseHostPort(text, what);
  return formatHostPort({ host: hp.host.toLowerCase(), port: hp.port });
}

export class DestAllowList {
  private readonly allowed: ReadonlySet<string>;

  /** Throws BAD_ADDRESS for an entry that is not HOST:PORT with a port from 1 to 65535. */
  constructor(entries: readonly string[]) {
    this.allowed = new Set(
      entries.map((e) => {
        const n = normalize(e, '--allow-dest address');
        if (n === undefined) throw new FerryError('BAD_ADDRESS', { message: `an --allow-dest address is longer than ${MAX_DEST_CHARS} characters` });
        return n;
      }),
    );
  }

  get size(): number {
    return this.allowed.size;
  }

  /** The normalized dest, or DEST_NOT_ALLOWED (BAD_ADDRESS when `dest` is not HOST:PORT at all). */
  check(dest: string, call: 'Migrate' | 'Check'): string {
    const n = normalize(dest, 'dest address');
    if (n !== undefined && this.allowed.has(n)) return n;
    // The refused text is not echoed back whole: a caller controls its length.
    const shown = n ?? `${dest.slice(0, 64)}...`;
    throw new FerryError('DEST_NOT_ALLOWED', {
      side: 'source',
      sourceState: 'running',
      message: `the source agent does not ${call === 'Migrate' ? 'migrate' : 'connect'} to ${shown}`,
      detail: `${call} to ${shown}: not on this agent's --allow-dest list`,
      ...(this.allowed.size === 0 && {
        hint: 'This agent was started without --allow-dest and refuses every dest: restart it with --allow-dest HOST:PORT for each dest it may use.',
      }),
    });
  }
}
