/** `ferry install-service`: the hardened systemd units, the environment file and the agents' directories. */
import { isAbsolute, resolve } from 'node:path';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { parse } from '../args.js';
import { EXIT } from '../exit-codes.js';
import { applyInstall, describeAction, planInstall, planRefusal } from '../install/install-plan.js';
import { serviceLayout, thisInstallation, type ServiceRole } from '../install/service-files.js';

export const INSTALL_SERVICE_HELP = `Usage: ferry install-service [--role dest|source|both] [--root DIR] [--dry-run] [--force]

Puts the systemd units of the agents in place, for the node and the Ferry package this command runs from:
  /etc/systemd/system/ferry-dest-agent.service    (--role dest, the default, or both)
  /etc/systemd/system/ferry-source-agent.service  (--role source or both)
  /etc/default/ferry                               the agents' FERRY_* variables, all commented
  /etc/ferry/ferry.toml                            the agents' config, if missing: the example, every setting commented out
and makes /etc/ferry (0755), /etc/ferry/tls (0700), /var/lib/ferry (0700) and /var/cache/ferry (0755).
The units run \`ferry dest-agent --config /etc/ferry/ferry.toml\` (and source-agent): edit that file (written
from deploy/ferry.toml.example when missing; \`ferry config check\` checks it) and make the TLS
files (\`ferry certs\`) before starting them. What the units harden, and what CRIU rules out: the comments in
the units, and docs/operations.md.

Running it again is safe: a file as it was written is updated to this version's template; a unit edited here
is refused (exit 2, FERRY-0050, nothing written) unless --force; an edited /etc/default/ferry is kept;
/etc/ferry/ferry.toml is never replaced once edited, even with --force.
Nothing is started: the last lines say what to run.

Options:
  --role ROLE   dest (default), source or both
  --root DIR    install under DIR instead of / (an image, a chroot, a test)
  --dry-run     print what would be done, change nothing
  --force       replace edited units and environment file too`;

const ROLES: readonly ServiceRole[] = ['dest', 'source', 'both'];

export function installServiceCommand(argv: string[]): Promise<number> {
  return Promise.resolve(installService(argv));
}

function installService(argv: string[]): number {
  const { values } = parse(argv, { role: { type: 'string' }, root: { type: 'string' }, 'dry-run': { type: 'boolean' }, force: { type: 'boolean' } });
  if (values.help) {
    console.log(INSTALL_SERVICE_HELP);
    return EXIT.ok;
  }
  const role = (values.role ?? 'dest') as ServiceRole;
  if (!ROLES.includes(role)) throw new FerryError('BAD_ARGUMENT', { message: `--role must be dest, source or both (got "${values.role}")` });
  if (values.root !== undefined && !isAbsolute(values.root)) throw new FerryError('BAD_ARGUMENT', { message: `--root must be an absolute path (got "${values.root}")` });
  const root = resolve(values.root ?? '/');
  const dryRun = values['dry-run'] === true;
  // The host's own /etc: only root may write it, and the units run as root.
  if (root === '/' && !dryRun && process.getuid?.() !== 0) throw new FerryError('NOT_ROOT', { message: 'install-service writes /etc/systemd/system: run it as root' });

  const layout = serviceLayout(role, thisInstallation());
  const actions = planInstall(layout, root, values.force === true);
  for (const a of actions) console.log(describeAction(a, dryRun));
  const refusal = planRefusal(actions);
  if (refusal) throw refusal;
  if (dryRun) return EXIT.ok;
  applyInstall(actions);
  const units = layout.units.join(' ');
  console.log(
    root === '/'
      ? `next: edit /etc/ferry/ferry.toml (ferry config check), make the TLS files (ferry certs), then: systemctl daemon-reload && systemctl enable --now ${units}`
      : `installed under ${root}; on the system it becomes: systemctl daemon-reload && systemctl enable --now ${units}`,
  );
  return EXIT.ok;
}
