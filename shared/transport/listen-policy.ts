/** Where an agent may listen: loopback, or beyond it only on the address the operator named as insecure. */
import { FerryError } from '../errors/ferry-error.js';
import { formatHostPort, isLoopback, type HostPort } from './address.js';

/** Refuses, before anything starts, a listener beyond loopback that the operator did not name. */
export function checkListenPolicy(listen: HostPort, insecureListen: string | undefined): void {
  if (isLoopback(listen.host)) return;
  if (insecureListen !== undefined && insecureListen === listen.host) return;
  throw new FerryError('INSECURE_LISTEN_REFUSED', {
    detail: `asked to listen on ${formatHostPort(listen)}${insecureListen ? ` but --insecure-listen names ${insecureListen}` : ''}`,
  });
}
