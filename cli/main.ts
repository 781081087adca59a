/** The `ferry` command: parse, call, render. The work happens in the agents' modules. */
import { FerryError } from '../shared/errors/ferry-error.js';
import { nodeEngineRange } from '../shared/repo-root.js';
import { unsupportedNode } from '../shared/runtime/node-runtime.js';
import { CERTS_HELP, certsCommand } from './commands/certs.js';
import { CHECK_HELP, checkCommand } from './commands/check.js';
import { CONFIG_HELP, configCommand } from './commands/config.js';
import { DEST_AGENT_HELP, destAgentCommand } from './commands/dest-agent.js';
import { INSTALL_SERVICE_HELP, installServiceCommand } from './commands/install-service.js';
import { MIGRATE_HELP, migrateCommand } from './commands/migrate.js';
import { RUN_HELP, runCommand } from './commands/run.js';
import { SETUP_HELP, setupCommand } from './commands/setup.js';
import { SOURCE_AGENT_HELP, sourceAgentCommand } from './commands/source-agent.js';
import { VERSION_HELP, versionCommand } from './commands/version.js';
import { EXIT, exitCodeFor } from './exit-codes.js';
import { formatError } from './render.js';

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<number>; help: string; summary: string }> = {
  migrate: { run: migrateCommand, help: MIGRATE_HELP, summary: 'move a running task to a dest agent' },
  run: { run: runCommand, help: RUN_HELP, summary: 'start a command as a migratable task' },
  check: { run: checkCommand, help: CHECK_HELP, summary: 'what this host (and a dest) supports; with a PID, the preflight of that task' },
  'dest-agent': { run: destAgentCommand, help: DEST_AGENT_HELP, summary: 'receive migrations (daemon)' },
  'source-agent': { run: sourceAgentCommand, help: SOURCE_AGENT_HELP, summary: 'run migrations for the CLI (optional daemon)' },
  config: { run: configCommand, help: CONFIG_HELP, summary: "check the agents' config file and show their effective settings" },
  certs: { run: certsCommand, help: CERTS_HELP, summary: 'make the CA and host certificates of mutual TLS' },
  setup: { run: setupCommand, help: SETUP_HELP, summary: 'provision CRIU on this host and check what it supports' },
  'install-service': { run: installServiceCommand, help: INSTALL_SERVICE_HELP, summary: 'put the hardened systemd units of the agents in place' },
  version: { run: versionCommand, help: VERSION_HELP, summary: "Ferry's version, the CRIU found, Node's (also --version)" },
};

const USAGE = `Usage: ferry COMMAND [options]   (ferry COMMAND --help for details)

Live migration of Linux process trees between hosts.

  ferry --version           Ferry's version, the CRIU found, Node's

Commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(14)}${c.summary}`)
  .join('\n')}`;

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(USAGE);
    return name ? EXIT.ok : EXIT.usage;
  }
  const command = COMMANDS[name === '--version' || name === '-V' ? 'version' : name];
  if (!command) {
    console.error(`ferry: unknown command "${name}"\n\n${USAGE}`);
    return EXIT.usage;
  }
  const json = rest.includes('--json');
  try {
    // Before any command touches a task or a host; `ferry --version` and `ferry check` report the runtime instead.
    if (command.run !== versionCommand && command.run !== checkCommand) refuseUnsupportedRuntime();
    return await command.run(rest);
  } catch (e) {
    const fe = e instanceof FerryError ? e : new FerryError('INTERNAL', { detail: e instanceof Error ? (e.stack ?? e.message) : String(e) });
    if (json) console.log(JSON.stringify({ kind: 'error', error: fe.toJSON() }));
    console.error(formatError(fe));
    return exitCodeFor(fe);
  }
}

function refuseUnsupportedRuntime(): void {
  // FERRY_TEST_NODE_VERSION stands in for this process's version in tests (no old Node is installed to run them).
  const problem = unsupportedNode(process.env.FERRY_TEST_NODE_VERSION || process.version, nodeEngineRange());
  if (problem) throw new FerryError('NODE_UNSUPPORTED', { detail: `${problem}; this is ${process.execPath}` });
}
