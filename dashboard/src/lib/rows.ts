//! The list in a REST answer: some routes answer a bare array, others `{<items>: [...], …}`.

export type Row = Record<string, unknown>;

/** The list in a REST answer: the answer itself, or its first array field. */
export function rowsOf(answer: unknown): Row[] {
  if (Array.isArray(answer)) return answer as Row[];
  if (typeof answer === "object" && answer !== null) {
    for (const v of Object.values(answer)) if (Array.isArray(v)) return v as Row[];
  }
  return [];
}

