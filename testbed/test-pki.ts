/**
 * A throwaway PKI for tests and the benchmark: a CA made with the product's own `ferry certs` code in a temp
 * dir, host certificates issued on demand, everything removed by remove(). The agents of the tests run with
 * these, so that every test migration goes over mutual TLS as a real one does.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { initCertificateAuthority, issueHostCertificate, type IssueOptions, type IssuedCertificate } from '../shared/transport/certificate-authority.js';
import { spiffeIdFor } from '../shared/transport/peer-identity.js';

export interface TestPki {
  readonly dir: string;
  readonly trustDomain: string;
  /** Issues HOST's files into DIR/hosts/HOST (or `o.out`). */
  issue(host: string, o?: Omit<IssueOptions, 'dir' | 'host'>): Promise<IssuedCertificate>;
  /** spiffe://TD/ferry/HOST. */
  idOf(host: string): string;
  remove(): void;
}

export async function createTestPki(parent: string, trustDomain = 'test.ferry'): Promise<TestPki> {
  const dir = mkdtempSync(join(parent, 'ferry-pki-'));
  try {
    await initCertificateAuthority({ dir: join(dir, 'ca'), trustDomain });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    dir,
    trustDomain,
    issue: (host, o = {}) => issueHostCertificate({ dir: join(dir, 'ca'), host, ...o }),
    idOf: (host) => spiffeIdFor(trustDomain, host),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
