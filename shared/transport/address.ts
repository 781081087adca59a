import { isIPv4, isIPv6 } from 'node:net';
import { FerryError } from '../errors/ferry-error.js';

export interface HostPort {
  host: string;
  port: number;
}

const HOSTNAME = /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/;

/**
 * Parses HOST:PORT (IPv6 in brackets). Port 0 ("any free port") only where `allowPortZero` says so: it makes
 * sense for a listen address, never for a peer. Throws BAD_ADDRESS before anything is touched.
 */
export function parseHostPort(text: string, what = 'address', opts: { allowPortZero?: boolean } = {}): HostPort {
  const bracketed = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text);
  const plain = bracketed ? null : /^([^:[\]]+):(\d{1,5})$/.exec(text);
  const host = bracketed ? bracketed[1]! : plain?.[1];
  const port = Number((bracketed ?? plain)?.[2] ?? NaN);
  const hostOk = host !== undefined && (bracketed ? isIPv6(host) : isIPv4(host) || HOSTNAME.test(host));
  const portOk = Number.isInteger(port) && port <= 65535 && (port > 0 || (port === 0 && opts.allowPortZero === true));
  if (!hostOk || !portOk) {
    throw new FerryError('BAD_ADDRESS', { message: `The ${what} "${text}" is not HOST:PORT${port === 0 ? ' with a port from 1 to 65535' : ''}` });
  }
  return { host: host, port };
}

export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
