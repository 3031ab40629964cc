//! One run: its waterfall, each step's input / output / error, the history, the time slider,
//! and the actions (cancel, pause, resume from a step, inject or patch a step, rerun).

import { useMemo, useState } from "react";
import { useClient, useLive } from "../api/context";
import type { HistoryEntry, Run, Step } from "../api/types";
import { useResource } from "../lib/resource";
import { buildWaterfall } from "../lib/waterfall";
import { base64FromJson } from "../lib/bytes";
import { clock, since } from "../lib/format";
import { navigate } from "../lib/router";
import { Waterfall } from "../components/Waterfall";
import { JsonView } from "../components/JsonView";
import { JsonEditor } from "../components/JsonEditor";
import { StatusBadge } from "../components/StatusBadge";
import { TimeSlider } from "../components/TimeSlider";
import { Link } from "../components/Link";
import { ErrorState, Loading } from "../components/States";

interface RunBundle { run: Run; steps: Step[]; history: HistoryEntry[]; fetchedAt: number }

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

function useRunBundle(id: string) {
  const client = useClient();
  const [version, setVersion] = useState(0);
  const bundle = useResource<RunBundle>(async () => {
    const [run, steps, history] = await Promise.all([
      client.get<Run>(`/api/v1/runs/${encodeURIComponent(id)}`),
      client.get<{ steps: Step[] }>(`/api/v1/runs/${encodeURIComponent(id)}/steps`),
      client.get<{ entries: HistoryEntry[] }>(`/api/v1/runs/${encodeURIComponent(id)}/history`),
    ]);
    return { run, steps: steps.steps, history: history.entries, fetchedAt: Date.now() };
  }, [client, id, version]);
  useLive(`system.run.${id}.>`, () => setVersion((v) => v + 1));
  return { bundle, version, refresh: () => setVersion((v) => v + 1) };
}

function Actions({ run, steps, onDone }: { run: Run; steps: Step[]; onDone: () => void }) {
  const client = useClient();
  const [message, setMessage] = useState<{ ok: boolean; text: string } | null>(null);
  const [fromStep, setFromStep] = useState("");
  const act = async (label: string, call: () => Promise<unknown>) => {
    setMessage(null);
    try {
      await call();
      setMessage({ ok: true, text: `${label}: done` });
      onDone();
    } catch (e) {
      setMessage({ ok: false, text: `${label}: ${e instanceof Error ? e.message : String(e)}` });
    }
  };
  const terminal = TERMINAL.has(run.status);
  const resumable = run.status === "paused" || run.status === "failed";
  return (
    <div className="flex flex-wrap items-center gap-2 text-sm">
      {!terminal ? <button type="button" className="rounded border px-2 py-0.5" onClick={() => void act("Cancel", () => client.rest("POST", `/api/v1/runs/${run.id}/cancel`, {}))}>Cancel</button> : null}
      {!terminal && run.status !== "paused" ? <button type="button" className="rounded border px-2 py-0.5" onClick={() => void act("Pause", () => client.connect("IronflowService", "PauseRun", { runId: run.id }))}>Pause</button> : null}
      {resumable ? (
        <>
          <select aria-label="Resume from step" value={fromStep} onChange={(e) => setFromStep(e.target.value)} className="rounded border px-1 py-0.5">
            <option value="">where it stopped</option>
            {steps.map((s) => <option key={s.step_id} value={s.step_id}>from {s.name || s.step_id}</option>)}
          </select>
          <button type="button" className="rounded border px-2 py-0.5" onClick={() => void act("Resume", () => client.connect("IronflowService", "ResumeRun", { runId: run.id, fromStep }))}>Resume</button>
        </>
      ) : null}
      <button type="button" className="rounded border px-2 py-0.5" onClick={() => void act("Rerun", async () => {
        const answer = await client.rest<{ run_id?: string; id?: string }>("POST", `/api/v1/functions/${run.function_id}/invoke`, { data: run.input });
        const id = answer.run_id ?? answer.id;
        if (id) navigate(`/runs/${id}`);
      })}>Rerun</button>
      {message ? <span role="status" className={message.ok ? "text-emerald-700" : "text-rose-700"}>{message.text}</span> : null}
    </div>
  );
}

function StepPanel({ run, step, onDone }: { run: Run; step: Step; onDone: () => void }) {
  const client = useClient();
  const [message, setMessage] = useState<{ ok: boolean; text: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const paused = run.status === "paused";
  const patchable = step.status === "failed" || step.status === "completed";
  const submit = async (value: unknown) => {
    setBusy(true);
    setMessage(null);
    try {
      if (paused) {
        await client.connect("IronflowService", "InjectStepOutput", { runId: run.id, stepId: `${run.id}:${step.step_id}`, newOutput: base64FromJson(value), reason: "dashboard" });
      } else {
        await client.connect("IronflowService", "PatchStep", { stepId: `${run.id}:${step.step_id}`, outputValue: value, reason: "dashboard" });
      }
      setMessage({ ok: true, text: paused ? "Injected: the resumed run uses this output" : "Patched" });
      onDone();
    } catch (e) {
      setMessage({ ok: false, text: e instanceof Error ? e.message : String(e) });
    } finally {
      setBusy(false);
    }
  };
  return (
    <div aria-label="Step detail" className="space-y-2 rounded border border-slate-200 bg-white p-3">
      <div className="flex items-center gap-2"><strong>{step.name || step.step_id}</strong><StatusBadge status={step.status} /><span className="text-xs text-slate-500">attempt {step.attempt} · {step.type}</span></div>
      <JsonView label="output" value={step.output} open />
      {step.error ? <JsonView label="error" value={step.error} open /> : null}
      {step.patched_at ? <JsonView label={`original output (patched ${since(step.patched_at)})`} value={step.original_output} /> : null}
      {paused || patchable ? (
        <details>
          <summary className="cursor-pointer text-xs font-medium text-indigo-700">{paused ? "Inject an output" : "Patch this step's output"}</summary>
          <JsonEditor key={step.step_id} initial={step.output ?? {}} submitLabel={paused ? "Inject output" : "Patch output"} onSubmit={(v) => void submit(v)} busy={busy} />
        </details>
      ) : null}
      {message ? <p role="status" className={`text-xs ${message.ok ? "text-emerald-700" : "text-rose-700"}`}>{message.text}</p> : null}
    </div>
  );
}

export function RunPage({ id }: { id: string }) {
  const { bundle, version, refresh } = useRunBundle(id);
  const [selected, setSelected] = useState<string | null>(null);
  const data = bundle.data;
  const model = useMemo(() => (data ? buildWaterfall(data.run, data.steps, data.fetchedAt) : null), [data]);
  if (bundle.error) return <ErrorState error={bundle.error} retry={bundle.reload} />;
  if (!data || !model) return <Loading />;
  const { run, steps, history } = data;
  const step = steps.find((s) => s.step_id === selected) ?? null;
  return (
    <section className="space-y-4">
      <header>
        <p className="text-xs text-slate-500"><Link to="/runs">Runs</Link> / {run.id}</p>
        <h1 className="flex items-center gap-3 text-2xl font-semibold">
          <Link to={`/functions/${run.function_id}`}>{run.function_id}</Link>
          <span data-testid="run-status"><StatusBadge status={run.status} /></span>
        </h1>
        <p className="text-xs text-slate-500">
          created {clock(run.created_at)} · attempt {run.attempt}/{run.max_attempts}
          {run.event_id ? <> · event <Link to={`/events/${run.event_id}`}>{run.event_name ?? run.event_id}</Link></> : null}
          {run.pause_requested ? <> · <span data-testid="pause-requested">pause requested</span></> : null}
        </p>
      </header>
      <Actions run={run} steps={steps} onDone={refresh} />
      <div className="grid gap-4 lg:grid-cols-[2fr_1fr]">
        <div className="space-y-2 rounded border border-slate-200 bg-white p-3">
          <h2 className="font-medium">Steps <span className="text-xs text-slate-500">({steps.length})</span></h2>
          {steps.length === 0 ? <p className="text-sm text-slate-500">No steps yet.</p> : <Waterfall model={model} selected={selected} onSelect={setSelected} />}
        </div>
        <div className="space-y-2">
          {step ? <StepPanel run={run} step={step} onDone={refresh} /> : <p className="text-sm text-slate-500">Select a step to see its output.</p>}
          <div className="space-y-1 rounded border border-slate-200 bg-white p-3">
            <JsonView label="input" value={run.input} />
            <JsonView label="output" value={run.output} />
            {run.error ? <JsonView label="error" value={run.error} open /> : null}
          </div>
        </div>
      </div>
      <div className="rounded border border-slate-200 bg-white p-3">
        <h2 className="mb-2 font-medium">Time travel</h2>
        <TimeSlider runId={run.id} version={version} />
      </div>
      <div className="rounded border border-slate-200 bg-white p-3">
        <h2 className="mb-2 font-medium">History</h2>
        <ol className="space-y-0.5 text-xs" aria-label="History">
          {history.map((h) => (
            <li key={h.seq} className="flex gap-2"><span className="w-44 text-slate-500">{clock(h.recorded_at)}</span><code className="w-40">{h.kind}</code><span className="truncate text-slate-500">{JSON.stringify(h.payload)}</span></li>
          ))}
        </ol>
      </div>
    </section>
  );
}
