/** One push of a registry to a Prometheus Pushgateway: `ferry migrate --pushgateway URL` at the end of a migration. */
import { hostname } from 'node:os';
import type { Registry } from 'prom-client';
import { FerryError } from '../errors/ferry-error.js';

/** A push has this long: a slow or absent Pushgateway must not hold the end of a migration. */
export const PUSH_TIMEOUT_MS = 5_000;
export const PUSH_JOB = 'ferry_migrate';

/** The --pushgateway URL, checked before anything is touched: http(s), a host, no query, fragment or credentials. */
export function parsePushgatewayUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw badUrl(text, 'not a URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw badUrl(text, `scheme ${url.protocol} (http or https)`);
  if (url.search || url.hash) throw badUrl(text, 'a query or fragment');
  if (url.username || url.password) throw badUrl(text, 'credentials in the URL');
  return url;
}

function badUrl(text: string, what: string): FerryError {
  return new FerryError('BAD_ARGUMENT', {
    message: `--pushgateway "${text}" is not a Pushgateway URL: ${what}`,
    hint: 'Give the Pushgateway base URL, e.g. --pushgateway http://127.0.0.1:9091',
  });
}

/**
 * PUT (replace the group) `registry` at URL/metrics/job/ferry_migrate/instance/HOST. Resolves to undefined, or to
 * why the push failed: the caller warns, the migration's result does not change.
 */
export async function pushMetrics(base: URL, registry: Registry, opts: { instance?: string; timeoutMs?: number } = {}): Promise<string | undefined> {
  const path = `metrics/job/${PUSH_JOB}/instance/${encodeURIComponent(opts.instance ?? hostname())}`;
  const url = new URL(path, base.href.endsWith('/') ? base.href : `${base.href}/`);
  try {
    const res = await fetch(url, {
      method: 'PUT',
      headers: { 'content-type': registry.contentType },
      body: await registry.metrics(),
      signal: AbortSignal.timeout(opts.timeoutMs ?? PUSH_TIMEOUT_MS),
    });
    if (res.ok) return undefined;
    const said = (await res.text().catch(() => '')).trim().slice(0, 200);
    return `${url.href} answered ${res.status}${said ? `: ${said}` : ''}`;
  } catch (e) {
    return `${url.href}: ${e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e)}`;
  }
}
