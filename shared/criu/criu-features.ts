/**
 * The CRIU features a migration turns on for one task, chosen from what the tree holds (task-criu-needs.ts)
 * and the operator's override, and the network-lock method established TCP needs on this host. The same
 * features go to `criu dump` and, through the RestoreRequest, to `criu restore`: an image dumped with
 * --tcp-established or --file-locks restores only with the same flag.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

export interface CriuFeatures {
  fileLocks: boolean;
  tcpEstablished: boolean;
}

export const NO_CRIU_FEATURES: CriuFeatures = { fileLocks: false, tcpEstablished: false };

/** auto: on when the tree needs it; on and off force the choice. */
export type FeatureChoice = 'auto' | 'on' | 'off';

export function featureChoice(v: string | undefined): FeatureChoice | undefined {
  return v === undefined || v === 'auto' || v === 'on' || v === 'off' ? (v ?? 'auto') : undefined;
}

export function resolveFeature(choice: FeatureChoice, needed: boolean): boolean {
  return choice === 'auto' ? needed : choice === 'on';
}

/** How CRIU blocks a connection's traffic between dump and restore (`--network-lock`). */
export type NetworkLock = 'nftables' | 'iptables';

/** The PeerInfo feature a side offers when it can lock (and so restore) established TCP connections. */
export const TCP_ESTABLISHED_FEATURE = 'criu-tcp-established';

/** The criu arguments of these features; `networkLock` only at dump (restore reads it from inventory.img). */
export function criuFeatureArgs(f: CriuFeatures, networkLock?: NetworkLock): string[] {
  const args: string[] = [];
  if (f.tcpEstablished) args.push('--tcp-established');
  if (f.tcpEstablished && networkLock) args.push('--network-lock', networkLock);
  if (f.fileLocks) args.push('--file-locks');
  return args;
}

function onPath(name: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      /* not here */
    }
  }
  return false;
}

const probes = new Map<string, Promise<NetworkLock | undefined>>();

/**
 * The network-lock method that works here, asked once per criu: nftables when this criu is built with it
 * (`criu check --feature nftables`, libnftables: no nft binary needed), else iptables when iptables-restore
 * exists (CRIU's default runs it), else none. CRIU's default fails where iptables-restore is missing.
 */
export function probeNetworkLock(criu: string): Promise<NetworkLock | undefined> {
  let p = probes.get(criu);
  if (!p) {
    p = new Promise<boolean>((ok) => execFile(criu, ['check', '--feature', 'nftables'], { timeout: 15_000 }, (err) => ok(!err))).then((nft) =>
      nft ? 'nftables' : onPath('iptables-restore') ? 'iptables' : undefined,
    );
    probes.set(criu, p);
  }
  return p;
}
