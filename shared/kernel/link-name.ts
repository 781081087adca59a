/**
 * Linux interface names (dev_valid_name): 1 to 15 bytes (IFNAMSIZ less the NUL), not "." or "..", no '/',
 * ':' or whitespace; and for what criu is given (a TaskNetwork's links and bridge, `ferry run --bridge`,
 * `dest-agent --bridge` and [dest-agent] bridge) only A-Z a-z 0-9 _ . - (criuLinkNameProblem).
 */
export const MAX_LINK_NAME_BYTES = 15;

/** What is wrong with `name` as an interface name, or undefined. */
export function linkNameProblem(name: string): string | undefined {
  const bytes = Buffer.byteLength(name);
  if (bytes === 0) return 'an empty interface name';
  if (bytes > MAX_LINK_NAME_BYTES) return `an interface name of ${bytes} bytes (at most ${MAX_LINK_NAME_BYTES})`;
  if (name === '.' || name === '..') return `"${name}" is no interface name`;
  if (/[/:\s\0]/.test(name)) return `the interface name "${name}" holds '/', ':', a NUL or whitespace`;
  return undefined;
}

/** Stricter than the kernel's names: criu splits `veth[INNER]:OUTER@BRIDGE` on '[', ']', ':' and '@'. */
const CRIU_SAFE = /^[A-Za-z0-9_.-]+$/;

/** linkNameProblem, or a character criu's `--external veth[..]:..@..` cannot carry; undefined when fine. */
export function criuLinkNameProblem(name: string): string | undefined {
  const problem = linkNameProblem(name);
  if (problem) return problem;
  if (!CRIU_SAFE.test(name)) return `the interface name "${name}" holds a character criu cannot be given (only A-Z a-z 0-9 _ . -)`;
  return undefined;
}
