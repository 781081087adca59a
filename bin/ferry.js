#!/usr/bin/env node
// The installed entry point: runs the compiled CLI (npm run build writes dist/).
import { main } from '../dist/cli/main.js';

const code = await main(process.argv.slice(2));
// Exit as soon as the command is done: a gRPC channel may otherwise linger until its keepalive fires.
process.stdout.write('', () => process.exit(code));
