import { runTask } from '../../source-agent/run-task.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { parse } from '../args.js';
import { EXIT } from '../exit-codes.js';

export const RUN_HELP = `Usage: ferry run [--name NAME] [--log-dir DIR] [--json] -- CMD [ARGS...]

Starts CMD as a task Ferry can migrate: pid 1 of its own pid namespace, its own session, stdin from
/dev/null, stdout and stderr appended to DIR/NAME.out and DIR/NAME.err, no inherited file descriptors.
Prints the task's pid, for \`ferry migrate PID --to HOST:PORT\`.
The log files are reopened by path after a migration, so DIR must exist on the dest too.

Options:
  --name NAME      the task's name, used for its log files (default: the command's name)
  --log-dir DIR    default /var/log/ferry/tasks
  --json           print {"pid":..,"launcherPid":..,"stdout":..,"stderr":..}`;

export async function runCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { name: { type: 'string' }, 'log-dir': { type: 'string' }, json: { type: 'boolean' } }, true);
  if (values.help) {
    console.log(RUN_HELP);
    return EXIT.ok;
  }
  const [command, ...args] = positionals;
  if (!command) throw new FerryError('BAD_ARGUMENT', { message: 'ferry run needs a command after --', hint: 'Usage: ferry run -- CMD [ARGS...]' });
  const name = values.name ?? (command.split('/').pop() || 'task');
  const task = await runTask({ command, args, name, logDir: values['log-dir'] ?? '/var/log/ferry/tasks' });
  console.log(values.json ? JSON.stringify(task) : String(task.pid));
  return EXIT.ok;
}
