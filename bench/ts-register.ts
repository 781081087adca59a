/**
 * `node --import ./build/bench/bench/ts-register.js bench/run.ts`: runs the benchmark from its TypeScript
 * sources in place (Node 20 has no type stripping). Type checking is `tsc -p bench/tsconfig.json`, which the
 * npm script runs first; this only transpiles.
 */
import { register } from 'node:module';

register('./ts-hooks.js', import.meta.url);
