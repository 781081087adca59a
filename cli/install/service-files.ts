/**
 * What `ferry install-service` puts on a host: the packaged templates of deploy/systemd/ (the one source of the
 * units) rendered for this installation, the environment file, and the directories the agents use, each with
 * its mode. Pure apart from reading the templates: install-plan.ts compares the result with the disk.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { ferryVersion, repoRoot } from '../../shared/repo-root.js';
import { contentHash } from './file-stamp.js';

export type ServiceRole = 'dest' | 'source' | 'both';

export interface ServiceFile {
  /** Absolute path on the target system (before --root is prefixed). */
  path: string;
  content: string;
  mode: number;
  /**
   * What an edited copy on disk means: units are refused (drop-ins are for local changes), the env file kept
   * (--force replaces both), the config file kept always: it holds the host's addresses and allow-lists.
   */
  whenEdited: 'refuse' | 'keep' | 'always-keep';
}

export interface ServiceDirectory {
  path: string;
  mode: number;
  /** Ferry's own directory: a looser mode on disk is tightened. Others (/etc/default) are only made if missing. */
  own: boolean;
}

export interface ServiceLayout {
  files: ServiceFile[];
  directories: ServiceDirectory[];
  units: string[];
}

export interface ServiceInstallation {
  /** The node binary the units run. */
  node: string;
  /** The package root (holds bin/ferry.js, docs/). */
  packageRoot: string;
  version: string;
}

/** This process's node and package: what the units will run. */
export function thisInstallation(): ServiceInstallation {
  return { node: realpathSync(process.execPath), packageRoot: realpathSync(repoRoot()), version: ferryVersion() };
}

/** Every setting of a TOML file commented out; its comments and [tables] kept, so it stays a valid, empty config. */
export function commentedOut(toml: string): string {
  return toml
    .split('\n')
    .map((line) => (line.trim() === '' || line.trimStart().startsWith('#') || /^\s*\[[^\]]+\]\s*$/.test(line) ? line : `# ${line}`))
    .join('\n');
}

/** systemd splits ExecStart on spaces and expands % and $: only plain paths go in unquoted, so only those are taken. */
const PLAIN_PATH = /^\/[A-Za-z0-9_@+=:,./-]+$/;

const UNITS: Record<'dest' | 'source', string> = { dest: 'ferry-dest-agent.service', source: 'ferry-source-agent.service' };

export function serviceLayout(role: ServiceRole, inst: ServiceInstallation): ServiceLayout {
  for (const p of [inst.node, inst.packageRoot]) {
    if (!PLAIN_PATH.test(p)) {
      throw new FerryError('BAD_ARGUMENT', {
        message: `the unit would run "${p}", a path systemd would split or expand`,
        hint: 'Install node and Ferry under paths of letters, digits and / . _ - only (npm install -g puts Ferry under its prefix).',
      });
    }
  }
  const templates = join(inst.packageRoot, 'deploy', 'systemd');
  const stamp = (source: string, body: string): string =>
    `# Written by ferry install-service ${inst.version} from ${source} (sha256 ${contentHash(body)} of what follows).\n${body}`;
  const roles = role === 'both' ? (['dest', 'source'] as const) : ([role] as const);
  const files: ServiceFile[] = roles.map((r) => {
    const body = readFileSync(join(templates, UNITS[r]), 'utf8')
      .replaceAll('@NODE@', inst.node)
      .replaceAll('@FERRY@', join(inst.packageRoot, 'bin', 'ferry.js'))
      .replaceAll('@PACKAGE@', inst.packageRoot);
    return { path: `/etc/systemd/system/${UNITS[r]}`, content: stamp(`deploy/systemd/${UNITS[r]}`, body), mode: 0o644, whenEdited: 'refuse' };
  });
  files.push({ path: '/etc/default/ferry', content: stamp('deploy/systemd/ferry.env', readFileSync(join(templates, 'ferry.env'), 'utf8')), mode: 0o640, whenEdited: 'keep' });
  // The units read /etc/ferry/ferry.toml: the example with every setting commented out until the operator edits
  // it (then it is theirs, kept). Its values are an example's: live, its socket-group would open the source
  // agent's socket to a group nobody chose; commented out, a dest agent refuses to start until given its address.
  files.push({
    path: '/etc/ferry/ferry.toml',
    content: stamp('deploy/ferry.toml.example', commentedOut(readFileSync(join(inst.packageRoot, 'deploy', 'ferry.toml.example'), 'utf8'))),
    mode: 0o640,
    whenEdited: 'always-keep',
  });
  const directories: ServiceDirectory[] = [
    { path: '/etc/systemd/system', mode: 0o755, own: false },
    { path: '/etc/default', mode: 0o755, own: false },
    // ferry.toml; tls/ holds the host's key (`ferry certs issue` writes it 0600).
    { path: '/etc/ferry', mode: 0o755, own: true },
    { path: '/etc/ferry/tls', mode: 0o700, own: true },
    // The units' StateDirectory= and CacheDirectory=, made here too so that `ferry setup` and the CLI find them.
    { path: '/var/lib/ferry', mode: 0o700, own: true },
    { path: '/var/cache/ferry', mode: 0o755, own: true },
  ];
  return { files, directories, units: roles.map((r) => UNITS[r]) };
}
