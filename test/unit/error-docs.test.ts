import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderErrorDocs } from '../../shared/errors/error-docs.js';
import { repoRoot } from '../../shared/repo-root.js';

describe('docs/errors.md', () => {
  it('is generated from the registry (run `npm run docs:errors` after changing codes.ts)', () => {
    expect(readFileSync(join(repoRoot(), 'docs/errors.md'), 'utf8')).toBe(renderErrorDocs());
  });
});
