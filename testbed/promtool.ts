/** Prometheus's promtool (Debian's prometheus package) as the tests run it: on deploy/prometheus/ and on an
 * agent's /metrics text. */
import { spawn } from 'node:child_process';

export interface PromtoolResult {
  exitCode: number | null;
  /** stdout and stderr together, as promtool interleaves its findings over both. */
  output: string;
}

/** `promtool ARGS...`, with `stdin` fed to it when given; bounded by timeoutMs. */
export function promtool(args: readonly string[], opts: { stdin?: string; cwd?: string; timeoutMs?: number } = {}): Promise<PromtoolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', args, { cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 30_000 });
    let output = '';
    child.stdout.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr.on('data', (b: Buffer) => (output += b.toString()));
    child.once('error', reject);
    child.once('close', (exitCode) => resolve({ exitCode, output }));
    child.stdin.end(opts.stdin ?? '');
  });
}

/** What `promtool check metrics` finds in prom-client's default metrics (not Ferry's names: gauges it calls
 * _total). Any other finding fails the checks. */
export const PROM_CLIENT_FINDINGS: readonly string[] = [
  'nodejs_active_handles_total non-counter metrics should not have "_total" suffix',
  'nodejs_active_requests_total non-counter metrics should not have "_total" suffix',
  'nodejs_active_resources_total non-counter metrics should not have "_total" suffix',
];

/** `promtool check metrics` of a Prometheus text exposition: its findings on Ferry's families (ferry_*), and
 * the others. Throws if promtool failed for another reason than its findings. */
export async function metricsFindings(text: string): Promise<{ ferry: string[]; others: string[] }> {
  const r = await promtool(['check', 'metrics'], { stdin: text });
  const lines = r.output.split('\n').map((l) => l.trim()).filter(Boolean);
  // Exit 3: lint findings; anything else but 0 is promtool failing to read the text.
  if (r.exitCode !== 0 && r.exitCode !== 3) throw new Error(`promtool check metrics exited ${r.exitCode}: ${r.output}`);
  return { ferry: lines.filter((l) => l.startsWith('ferry_')), others: lines.filter((l) => !l.startsWith('ferry_')) };
}
