import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/** The checkout (or installed package) root: the code runs from sources in tests and from dist/ when built. */
export function repoRoot(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'ferry') {
      cached = dir;
      return dir;
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the ferry package root above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

interface PackageJson {
  version: string;
  engines?: { node?: string };
}

function packageJson(): PackageJson {
  return JSON.parse(readFileSync(join(repoRoot(), 'package.json'), 'utf8')) as PackageJson;
}

export function ferryVersion(): string {
  return packageJson().version;
}

/** package.json's `engines.node`: the Node versions Ferry runs on ('*' when it names none). */
export function nodeEngineRange(): string {
  return packageJson().engines?.node ?? '*';
}
