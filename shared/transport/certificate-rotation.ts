/**
 * Certificate rotation in place: this host's certificate, key and CA are read again every refresh interval and
 * handed to grpc-js (its certificate-provider credentials), so that a renewed certificate is served on new
 * connections without a restart.
 *
 * Why not grpc-js's FileWatcherCertificateProvider: it publishes whatever it reads, so a certificate renamed
 * into place a moment before its key (or a half-written file) makes every new handshake fail until the next
 * refresh. This one publishes only a set that passes the same checks as at start (tls-material.ts) and still
 * names this host; otherwise it keeps serving the last good set and says why in the log.
 */
import type { experimental } from '@grpc/grpc-js';
import type { Logger } from '../logging/logger.js';
import { describeIdentity } from './peer-identity.js';
import { readTlsMaterial, type TlsMaterial } from './tls-material.js';
import type { TlsSecurity } from './transport-security.js';

type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;

export class RotatingCertificateProvider implements experimental.CertificateProvider {
  private current: TlsMaterial;
  private readonly caListeners = new Set<CaListener>();
  private readonly identityListeners = new Set<IdentityListener>();
  private timer: NodeJS.Timeout | undefined;
  private reading = false;
  /** The last refusal logged, so that a bad file on disk is reported once, not every refresh. */
  private lastProblem = '';

  constructor(
    private readonly security: TlsSecurity,
    private readonly log?: Logger,
  ) {
    this.current = security.material;
  }

  /** What is served now (tests and `ferry check` read the serial). */
  get material(): TlsMaterial {
    return this.current;
  }

  /** Reads the files once more and publishes them if they changed and pass; resolves when done. */
  async refresh(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      const next = await readTlsMaterial(this.security.files, this.security.roles);
      const same = next.cert.equals(this.current.cert) && next.key.equals(this.current.key) && next.ca.equals(this.current.ca);
      if (same) return;
      const was = describeIdentity(this.current.identity);
      const now = describeIdentity(next.identity);
      if (now !== was) throw new Error(`the new certificate names ${now}, not this host (${was})`);
      this.current = next;
      this.lastProblem = '';
      this.log?.info('TLS certificate rotated', { identity: now, serial: next.serial, notAfter: next.notAfter.toISOString() });
      this.publish();
    } catch (e) {
      const problem = e instanceof Error ? e.message + ((e as { detail?: string }).detail ? `: ${(e as { detail?: string }).detail}` : '') : String(e);
      if (problem !== this.lastProblem) this.log?.warn('TLS files on disk not taken; still serving the previous certificate', { problem, serial: this.current.serial });
      this.lastProblem = problem;
    } finally {
      this.reading = false;
    }
  }

  private publish(): void {
    const ca = { caCertificate: this.current.ca };
    const identity = { certificate: this.current.cert, privateKey: this.current.key };
    for (const l of this.caListeners) l(ca);
    for (const l of this.identityListeners) l(identity);
  }

  private started(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.refresh(), this.security.refreshIntervalMs);
    this.timer.unref(); // never what keeps a process alive
  }

  private maybeStop(): void {
    if (this.caListeners.size > 0 || this.identityListeners.size > 0 || !this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
  }

  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    this.started();
    process.nextTick(listener, { caCertificate: this.current.ca });
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
    this.maybeStop();
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    this.started();
    process.nextTick(listener, { certificate: this.current.cert, privateKey: this.current.key });
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
    this.maybeStop();
  }
}
