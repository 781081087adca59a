#!/usr/bin/env node
// npm's install step (package.json "install"): builds binding.gyp's two targets, the N-API addon
// (build/Release/ferry_native.node) and the lazy-restore pager (build/Release/ferry_pager), with the node-gyp
// npm ships. It replaces npm's implicit `node-gyp rebuild` only to pass --nodedir when this Node has its
// headers installed beside it (Debian's and NodeSource's nodejs: /usr/include/node): node-gyp would otherwise
// download them from nodejs.org, which an isolated host cannot reach. An operator's npm_config_nodedir wins.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

const prefix = dirname(dirname(process.execPath));
const args = ['rebuild'];
if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);

// npm names its bundled node-gyp in the environment of lifecycle scripts; run by hand, the one npm ships
// beside this node, else one on PATH.
const besideNode = join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const gyp = process.env.npm_config_node_gyp || (existsSync(besideNode) ? besideNode : undefined);
const r = gyp ? spawnSync(process.execPath, [gyp, ...args], { stdio: 'inherit' }) : spawnSync('node-gyp', args, { stdio: 'inherit' });
if (r.status !== 0) {
  console.error(
    `ferry: building the native addon failed (${r.error?.message ?? `node-gyp exited ${r.status ?? r.signal}`}). ` +
      'It needs gcc, make, python3 and libxxhash-dev (apt-get install gcc make python3 libxxhash-dev); then install again.',
  );
  process.exit(1);
}
