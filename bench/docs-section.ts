/**
 * Sections of docs/benchmarks.md that another benchmark owns (the data plane's), between
 * `<!-- bench:ID -->` and `<!-- /bench:ID -->`: each benchmark rewrites only its own, and the main benchmark,
 * which regenerates the whole file, carries the others over.
 */
const begin = (id: string): string => `<!-- bench:${id} -->`;
const end = (id: string): string => `<!-- /bench:${id} -->`;
const SECTION = /<!-- bench:([a-z0-9-]+) -->[\s\S]*?<!-- \/bench:\1 -->\n?/g;

/** `text` with section `id` replaced by `body` (appended when it has none). */
export function replaceSection(text: string, id: string, body: string): string {
  const block = `${begin(id)}\n${body.trimEnd()}\n${end(id)}\n`;
  const at = text.indexOf(begin(id));
  const stop = text.indexOf(end(id));
  if (at >= 0 && stop > at) {
    const after = text.slice(stop + end(id).length).replace(/^\n/, '');
    return `${text.slice(0, at)}${block}${after}`;
  }
  return `${text.trimEnd()}\n\n${block}`;
}

/** `fresh` (a regenerated file) with every owned section of `old` appended that `fresh` lacks. */
export function keepSections(old: string, fresh: string): string {
  let out = fresh;
  for (const m of old.matchAll(SECTION)) {
    const id = m[1]!;
    if (out.includes(begin(id))) continue;
    out = `${out.trimEnd()}\n\n${m[0].trimEnd()}\n`;
  }
  return out;
}
