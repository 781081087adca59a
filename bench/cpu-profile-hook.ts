/**
 * `node --cpu-prof` for a process started through NODE_OPTIONS, where Node 20 does not allow that flag:
 * NODE_OPTIONS="--import=<build/bench/bench/cpu-profile-hook.js>" with FERRY_BENCH_CPU_PROF_DIR set starts the
 * V8 profiler in the process (node:inspector) and writes DIR/<pid>.cpuprofile when it exits (process.exit or
 * the end of its work; a SIGKILL writes nothing). Run compiled, like stream-probe.js.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

const dir = process.env.FERRY_BENCH_CPU_PROF_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  // 1 ms, as --cpu-prof-interval's default.
  session.post('Profiler.setSamplingInterval', { interval: 1000 });
  session.post('Profiler.start');
  process.once('exit', () => {
    // The in-process session answers synchronously, so this runs before the process is gone.
    session.post('Profiler.stop', (err, res) => {
      if (!err) writeFileSync(join(dir, `${process.pid}.cpuprofile`), JSON.stringify(res.profile));
    });
  });
}
