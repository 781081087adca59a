// Writes docs/errors.md from the compiled error registry (npm run docs:errors builds first).
import { writeFileSync } from 'node:fs';
import { renderErrorDocs } from '../dist/shared/errors/error-docs.js';

writeFileSync(new URL('../docs/errors.md', import.meta.url), renderErrorDocs());
