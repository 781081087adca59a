/**
 * An agent's log as the test read it from its stderr: one JSON object per line (FERRY_LOG_FORMAT=json, what
 * journald gets). A line that is not one is an error naming it: every line an agent writes must parse.
 */
export type AgentLogRecord = Record<string, unknown>;

export function parseAgentLog(stderr: string, what: string): AgentLogRecord[] {
  const records: AgentLogRecord[] = [];
  for (const [i, line] of stderr.split('\n').entries()) {
    if (line === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new Error(`line ${i + 1} of ${what}'s log is not JSON: ${line.slice(0, 300)}`);
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`line ${i + 1} of ${what}'s log is not a JSON object: ${line.slice(0, 300)}`);
    records.push(value as AgentLogRecord);
  }
  return records;
}

/** The records of one migration (as `jq 'select(.migrationId == ID)'` picks them). */
export function migrationRecords(records: readonly AgentLogRecord[], migrationId: string): AgentLogRecord[] {
  return records.filter((r) => r.migrationId === migrationId);
}
