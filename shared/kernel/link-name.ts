/**
 * Linux interface names (dev_valid_name): 1 to 15 bytes (IFNAMSIZ less the NUL), not "." or "..", no '/',
 * ':' or whitespace. What a TaskNetwork's links and bridge, `ferry run --bridge` and `dest-agent --bridge` take.
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
