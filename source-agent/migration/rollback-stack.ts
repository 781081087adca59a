/**
 * Undo steps registered as a migration changes things (dest session, frozen task, temp files). Rollback runs
 * them all in reverse, never stops at a failing one, and returns every error so that they can be attached to
 * the first cause (which always wins).
 *
 * push() returns the step's handle: a step whose effect became permanent (the freeze once the dest copy runs)
 * is released through its handle, never looked up by a name that a typo could miss.
 */
export type UndoSide = 'source' | 'dest';

export interface UndoHandle {
  readonly what: string;
  /** The effect is now permanent: the step will not run. Releasing twice is harmless. */
  release(): void;
}

export interface RollbackError extends Error {
  side: UndoSide;
}

interface UndoStep {
  what: string;
  undo: () => Promise<void> | void;
  /** Where the step acts: a failed source step leaves the task's state unknown, a failed dest step does not. */
  side: UndoSide;
}

export class RollbackStack {
  private steps: UndoStep[] = [];

  push(what: string, undo: UndoStep['undo'], side: UndoSide = 'source'): UndoHandle {
    const step: UndoStep = { what, undo, side };
    this.steps.push(step);
    return {
      what,
      release: () => {
        this.steps = this.steps.filter((s) => s !== step);
      },
    };
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
