/** `--config FILE` of the commands that read the agents' config file, and its help line. */
import { DEFAULT_CONFIG_FILE } from '../../shared/config/config-file.js';

export const CONFIG_FLAG = { config: { type: 'string' } } as const;

/** The help line, its text starting at column `indent` like the command's other options. */
export function configHelp(table: 'dest-agent' | 'source-agent', indent: number): string {
  const pad = ' '.repeat(indent);
  return [
    `  ${'--config FILE'.padEnd(indent - 2)}settings in TOML: [${table}], its keys named as these flags`,
    `${pad}(default $FERRY_CONFIG, else ${DEFAULT_CONFIG_FILE} if it exists);`,
    `${pad}a flag or a FERRY_* variable overrides the file`,
  ].join('\n');
}
