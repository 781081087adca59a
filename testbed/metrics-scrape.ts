/** Reading an agent's /metrics from inside a host's network namespace (the test process lives outside them). */
import { execFile, spawn } from 'node:child_process';
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


/** One scrape of one URL by a poller: when (ms since the poller started) and the samples kept, `name{labels}` -> value. */
export interface PolledScrape {
  url: number;
  atMs: number;
  samples: Record<string, number>;
}

export interface MetricsPoller {
  readonly scrapes: readonly PolledScrape[];
  /** Scrapes that failed (connection refused before a server is up, a timeout), by count. */
  readonly failures: number;
  /** Stops the poller and waits for it to exit (SIGKILL after 5 s). */
  stop(): Promise<void>;
}

/**
 * Scrapes every URL every `everyMs` from one long-lived node process inside the host's namespace (a process per
 * scrape would cost more than the interval on a shared CPU), keeping only the samples whose names start with
 * one of `prefixes`. Each scrape has a timeout of `everyMs * 5`; the poller runs until stop().
 */
export function pollMetricsIn(host: Host, urls: readonly string[], everyMs: number, prefixes: readonly string[]): MetricsPoller {
  const script = `
    const [urls, every, prefixes] = JSON.parse(process.argv[1]);
    const t0 = Date.now();
    const one = async (url, i) => {
      try {
        const r = await fetch(url, { signal: AbortSignal.timeout(every * 5) });
        const text = await r.text();
        const samples = {};
        for (const line of text.split('\\n')) {
          if (line.startsWith('#') || !prefixes.some((p) => line.startsWith(p))) continue;
          const at = line.lastIndexOf(' ');
          samples[line.slice(0, at)] = Number(line.slice(at + 1));
        }
        process.stdout.write(JSON.stringify({ url: i, atMs: Date.now() - t0, samples }) + '\\n');
      } catch (e) {
        process.stdout.write(JSON.stringify({ url: i, failed: String(e) }) + '\\n');
      }
    };
    const tick = () => Promise.all(urls.map(one)).then(() => setTimeout(tick, every));
    tick();`;
  const child = spawn('nsenter', [`--net=${host.netns}`, process.execPath, '-e', script, JSON.stringify([urls, everyMs, prefixes])], { stdio: ['ignore', 'pipe', 'ignore'] });
  const scrapes: PolledScrape[] = [];
  let failures = 0;
  let rest = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    const lines = (rest + chunk).split('\n');
    rest = lines.pop() ?? '';
    for (const l of lines) {
      const s = JSON.parse(l) as PolledScrape & { failed?: string };
      if (s.failed === undefined) scrapes.push(s);
      else failures++;
    }
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    scrapes,
    get failures() {
      return failures;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(killer);
    },
  };
}
