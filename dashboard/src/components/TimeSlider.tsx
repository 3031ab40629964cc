//! The time slider: pick a moment on the run's timeline and see the run as it was then
//! (`TimeTravelService.GetRunStateAt`).

import { useState } from "react";
import { useClient } from "../api/context";
import { useResource } from "../lib/resource";
import { jsonFromBase64 } from "../lib/bytes";
import { clock } from "../lib/format";
import { StatusBadge } from "./StatusBadge";
import { JsonView } from "./JsonView";

interface TimelineEvent { id?: string; eventType?: string; stepName?: string; summary?: string; timestamp?: string }
interface SnapshotStep { stepId?: string; name?: string; status?: string; output?: string; error?: string }
interface Snapshot { status?: string; steps?: SnapshotStep[]; timestamp?: string }

export function TimeSlider({ runId, version }: { runId: string; version: number }) {
  const client = useClient();
  const timeline = useResource(() => client.connect<{ events?: TimelineEvent[] }>("TimeTravelService", "GetRunTimeline", { runId }), [client, runId, version]);
  const events = timeline.data?.events ?? [];
  const [index, setIndex] = useState<number | null>(null);
  const position = index === null ? events.length - 1 : Math.min(index, events.length - 1);
  const moment = events[position]?.timestamp;
  const state = useResource<{ snapshot?: Snapshot }>(
    () => (moment ? client.connect<{ snapshot?: Snapshot }>("TimeTravelService", "GetRunStateAt", { runId, timestamp: moment }) : Promise.resolve<{ snapshot?: Snapshot }>({})),
    [client, runId, moment],
  );
  if (timeline.error) return <p className="text-sm text-rose-700">{timeline.error.message}</p>;
  if (events.length === 0) return <p className="text-sm text-slate-500">No history yet.</p>;
  const snapshot = state.data?.snapshot;
  return (
    <div className="space-y-2">
      <input
        type="range"
        aria-label="Time slider"
        min={0}
        max={events.length - 1}
        value={position}
        onChange={(e) => setIndex(Number(e.target.value))}
        className="w-full"
      />
      <div className="text-xs text-slate-600" data-testid="slider-moment">
        {position + 1}/{events.length} · {clock(moment)} · <strong>{events[position]?.eventType}</strong> {events[position]?.summary}
      </div>
      {snapshot ? (
        <div data-testid="state-at" className="rounded border border-slate-200 p-2 text-xs">
          <div className="mb-1">Status then: <StatusBadge status={snapshot.status ?? "unknown"} /></div>
          <ul>
            {(snapshot.steps ?? []).map((s) => (
              <li key={s.stepId} className="flex items-center gap-2">
                <span className="w-40 truncate">{s.name || s.stepId}</span>
                <StatusBadge status={s.status ?? ""} />
                {s.output ? <JsonView label="output then" value={jsonFromBase64(s.output)} /> : null}
              </li>
            ))}
          </ul>
        </div>
      ) : null}
    </div>
  );
}
