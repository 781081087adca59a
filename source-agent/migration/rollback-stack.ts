/**
 * Undo steps registered as a migration changes things (dest session, frozen task, temp files). Rollback runs
 * them all in reverse, never stops at a failing one, and returns every error so that they can be attached to
 * the first cause (which always wins).
 */
export interface UndoStep {
  what: string;
  undo: () => Promise<void> | void;
  /** Where the step acts: a failed source step leaves the task's state unknown, a failed dest step does not. */
  side: 'source' | 'dest';
}

export interface RollbackError extends Error {
  side: 'source' | 'dest';
}

export class RollbackStack {
  private steps: UndoStep[] = [];

  push(what: string, undo: UndoStep['undo'], side: UndoStep['side'] = 'source'): void {
    this.steps.push({ what, undo, side });
  }

  /** Removes a step whose effect became permanent (e.g. the freeze once the dest copy runs). */
  drop(what: string): void {
    this.steps = this.steps.filter((s) => s.what !== what);
  }

  get pending(): readonly string[] {
    return this.steps.map((s) => s.what);
  }

  async run(): Promise<RollbackError[]> {
    const errors: RollbackError[] = [];
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await step.undo();
      } catch (e) {
        const err = new Error(`rollback step "${step.what}" failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e }) as RollbackError;
        err.side = step.side;
        errors.push(err);
      }
    }
    return errors;
  }
}
