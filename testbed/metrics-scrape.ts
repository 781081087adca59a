/** Reading an agent's /metrics from inside a host's network namespace (the test process lives outside them). */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Host } from './netns-hosts.js';

const execFileAsync = promisify(execFile);

/** GET of an http:// URL from inside a host's network namespace (the test process lives outside them). */
export async function httpGetIn(host: Host, url: string, timeoutMs = 10_000): Promise<string> {
  const script = 'fetch(process.argv[1]).then(async (r) => { if (!r.ok) throw new Error(`HTTP ${r.status}`); process.stdout.write(await r.text()); })';
  const { stdout } = await execFileAsync('nsenter', [`--net=${host.netns}`, process.execPath, '-e', script, url], {
    timeout: timeoutMs,
    maxBuffer: 16 << 20,
  });
  return stdout;
}

/** The value of one sample of a Prometheus text exposition, e.g. metricValue(text, 'x_total{result="ok"}'). */
export function metricValue(text: string, sample: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
  }
  return undefined;
}

