/** `ferry setup`: the explicit step that makes a host ready, CRIU first (the agents never download it). */
import { criuVersion, provisionCriu } from '../../shared/criu/criu-binary.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { loadNativeAddon } from '../../shared/native/addon.js';
import { probeLazyRestore } from '../../dest-agent/lazy/lazy-restore-support.js';
import { parse } from '../args.js';
import { EXIT } from '../exit-codes.js';
import { checkCommand } from './check.js';

export const SETUP_HELP = `Usage: ferry setup

Makes this host ready to migrate from and to, as root:
  1. CRIU >= 4.2: FERRY_CRIU, else the system's criu, else Debian forky's criu unpacked into a private prefix
     (FERRY_CACHE_DIR, default /var/cache/ferry; about 8 MB from the Debian mirror of /etc/apt, nothing of the
     system changes). Cached: a second run only checks it. Prints the path and version.
  2. Ferry's native addon and the lazy-restore pager (built when the package was installed).
  3. What \`ferry check\` reports without a PID: CRIU, the dirty-page trackers, kernel and page size.
Migrations, the agents and \`ferry --version\` only look for CRIU; this is the step that provisions it.
Exit code 0 when the host can migrate, 1 otherwise (the lines say what is missing); 2 when CRIU could not be
provisioned (FERRY-1020, nothing of the system changed).`;

export async function setupCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {});
  if (values.help) {
    console.log(SETUP_HELP);
    return EXIT.ok;
  }
  const criu = await provisionCriu({ progress: (line) => console.error(line) }).catch((e: unknown) => {
    throw new FerryError('CRIU_PROVISION_FAILED', { detail: e instanceof Error ? e.message : String(e), cause: e });
  });
  console.log(`criu          ${(await criuVersion(criu)).text} (${criu})`);
  let ok = true;
  try {
    loadNativeAddon();
    console.log('native addon  ok');
  } catch (e) {
    ok = false;
    // The first line: node's message goes on with its require stack.
    console.log(`native addon  MISSING: ${e instanceof FerryError ? `${e.code} ${(e.detail ?? e.message).split('\n')[0]}; ${e.hint}` : String(e)}`);
  }
  const lazy = await probeLazyRestore();
  // Not a failure: a dest without it restores eagerly (migrate --restore eager, and auto falls back).
  console.log(`lazy restore  ${lazy.ok ? 'ok' : `no: ${lazy.reason}`}`);
  const checked = await checkCommand([]);
  return ok && checked === EXIT.ok ? EXIT.ok : EXIT.failed;
}
