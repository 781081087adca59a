/**
 * A stand-in for an agent, run in a process of its own (`vite-node test/support/agent-stand-in.ts CMD ...`) so
 * that a test can kill -9 it in the middle of what an agent does. It prints one line per step and then waits
 * to be killed:
 *   images-dir ROOT MIGRATION_ID      createImagesDir (a file inside), prints the dir
 *   dump CRIU PID DIR LOG             prints "dumping", runs criu dump --leave-stopped
 *   lazy-dump CRIU PID DIR LOG        starts a lazy dump, prints "ready" once the tree is frozen under criu
 * The dumps arm no freeze lease: its SIGCONT alone can make criu abort a dump, and the tests check that criu
 * dies of its agent's death; they resume the task themselves, as the lease would.
 *   restore CRIU DIR PID_FILE LOG     prints "restoring", runs criu restore --leave-stopped, prints the pid
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startLazyDump } from '../../shared/criu/criu-lazy-dump.js';
import { criuDump, criuRestore } from '../../shared/criu/criu-runner.js';
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
    say('dumping');
    await criuDump({ criu, pid: Number(pid), imagesDir: dir, logFile: log });
    say('dumped');
    break;
  }
  case 'lazy-dump': {
    const [criu, pid, dir, log] = args as [string, string, string, string];
    await startLazyDump({ criu, pid: Number(pid), imagesDir: dir, logFile: log, readyTimeoutMs: 30_000 });
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
