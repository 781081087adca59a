/**
 * The `ferry` command run from the sources (`vite-node test/support/ferry-cli.ts ARGS...`), for tests that
 * need the CLI in a process of its own, e.g. under another uid, without a build of dist/.
 */
import { main } from '../../cli/main.js';

const code = await main(process.argv.slice(2));
process.stdout.write('', () => process.exit(code));
