//! The REST shapes the dashboard reads (as `src/api/rest.rs` writes them).

export type RunStatus = "pending" | "running" | "waiting" | "sleeping" | "paused" | "completed" | "failed" | "cancelled";

export interface Run {
  id: string;
  function_id: string;
  function_version: number;
  event_id: string | null;
  event_name: string | null;
  status: RunStatus | string;
  input: unknown;
  output: unknown;
  error: unknown;
  attempt: number;
  max_attempts: number;
  parent_run_id: string | null;
  created_at: string;
  updated_at: string;
  started_at: string | null;
  ended_at: string | null;
  pause_requested: boolean;
  pause_reason: string | null;
  resume_from_step: string | null;
}

export interface Step {
  run_id: string;
  step_id: string;
  name: string;
  type: string;
  sequence: number;
  status: string;
  output: unknown;
  error: unknown;
  attempt: number;
  started_at: string | null;
  ended_at: string | null;
  original_output: unknown;
  patched_at: string | null;
  patched_by: string | null;
  injected: boolean;
}

export interface HistoryEntry {
  seq: number;
  recorded_at: string;
  kind: string;
  run_id: string | null;
  function_id: string | null;
  event_id: string | null;
  payload: Record<string, unknown>;
}

export interface EventRecord {
  id: string;
  seq: number;
  name: string;
  data: unknown;
  metadata: unknown;
  source: string;
  timestamp: string;
  idempotency_key?: string;
  run_ids?: string[];
  entity_id?: string;
  entity_type?: string;
  entity_version?: number;
}

export interface FunctionRecord {
  id: string;
  name?: string;
  version: number;
  status: string;
  triggers?: { event?: string; cron?: string; expression?: string }[];
  endpoint_url?: string;
  created_at: string;
  updated_at: string;
  [key: string]: unknown;
}

export interface Page<K extends string, T> {
  count: number;
  has_next: boolean;
  next_cursor: string | null;
  limit?: number;
  items: T[];
  key: K;
}

export interface RunsPage { runs: Run[]; has_next: boolean; next_cursor: string | null }
export interface EventsPage { events: EventRecord[]; has_next: boolean; next_cursor: string | null }
export interface FunctionsPage { functions: FunctionRecord[]; has_next: boolean; next_cursor: string | null }
