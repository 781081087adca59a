/**
 * A stand-in for an agent, run in a process of its own (`vite-node test/support/agent-stand-in.ts CMD ...`) so
 * that a test can kill -9 it in the middle of what an agent does. It prints one line per step and then waits
 * to be killed:
 *   images-dir ROOT MIGRATION_ID      createImagesDir (a file inside), prints the dir
 *   dump CRIU PID DIR LOG             arms a freeze lease, prints "dumping", runs criu dump --leave-stopped
 *   lazy-dump CRIU PID DIR LOG        the same with a lazy dump, prints "ready" once the tree is frozen under criu
 * The dumps tell the lease criu's pid, as the freeze phase does: killed, the stand-in leaves criu to finish and
 * its guard thaws the task once criu is gone.
 *   restore CRIU DIR PID_FILE LOG     prints "restoring", runs criu restore --leave-stopped, prints the pid
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startLazyDump } from '../../shared/criu/criu-lazy-dump.js';
import { criuDump, criuRestore } from '../../shared/criu/criu-runner.js';
import { FreezeLease } from '../../source-agent/freeze-lease.js';
import { createImagesDir } from '../../source-agent/images-dir.js';

const [cmd, ...args] = process.argv.slice(2);
const say = (line: string): void => {
  process.stdout.write(line + '\n');
};

switch (cmd) {
  case 'images-dir': {
    const [root, id] = args as [string, string];
    const images = await createImagesDir(root, id);
    writeFileSync(join(images.dir, 'pages-1.img'), Buffer.alloc(4096, 1));
    say(images.dir);
    break;
  }
  case 'dump': {
    const [criu, pid, dir, log] = args as [string, string, string, string];
    const lease = new FreezeLease(60_000, Number(pid), [Number(pid)]);
    say('dumping');
    await criuDump({ criu, pid: Number(pid), imagesDir: dir, logFile: log, onStarted: (c) => lease.waitForDump(c) });
    say('dumped');
    break;
  }
  case 'lazy-dump': {
    const [criu, pid, dir, log] = args as [string, string, string, string];
    const lease = new FreezeLease(60_000, Number(pid), [Number(pid)]);
    await startLazyDump({ criu, pid: Number(pid), imagesDir: dir, logFile: log, readyTimeoutMs: 30_000, onStarted: (c) => lease.waitForDump(c) });
    say('ready');
    break;
  }
  case 'restore': {
    const [criu, dir, pidFile, log] = args as [string, string, string, string];
    say('restoring');
    say(String(await criuRestore({ criu, imagesDir: dir, pidFile, logFile: log, leaveStopped: true, detach: true, timeoutMs: 60_000 })));
    break;
  }
  default:
    throw new Error(`unknown command ${cmd}`);
}
setInterval(() => undefined, 1000); // until killed
