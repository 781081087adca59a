import { FerryError } from '../errors/ferry-error.js';

export interface HostPort {
  host: string;
  port: number;
}

/** Parses HOST:PORT (IPv6 in brackets). Throws BAD_ADDRESS before anything is touched. */
export function parseHostPort(text: string, what = 'address'): HostPort {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]\s]+):(\d+)$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new FerryError('BAD_ADDRESS', { message: `The ${what} "${text}" is not HOST:PORT`, side: undefined });
  }
  return { host: m[1]!, port };
}

export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
