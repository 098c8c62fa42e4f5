import { useEffect, useMemo, useRef, useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { apiJson, apiText, ws } from "../lib/api";
import { buildFlowGraph, suspendedSteps, type ChildRef, type GraphNode } from "../lib/flowGraph";
import type { FlowStatus, Job } from "../lib/types";
import { useAsync } from "../lib/useAsync";
import { useChildFlowStatuses } from "../lib/useChildFlowStatuses";
import { useJobStream } from "../lib/useJobStream";
import { ErrorBox, formatDuration, formatTime, jobStatus, Loading, runnableOf, StatusBadge } from "../components/common";
import { FlowGraphView } from "../components/FlowGraphView";
import { JsonTree, ResultView } from "../components/ResultView";

function LogView({ logs, live }: { logs: string; live: boolean }) {
  const ref = useRef<HTMLPreElement>(null);
  useEffect(() => {
    const element = ref.current;
    if (element && live) element.scrollTop = element.scrollHeight;
  }, [logs, live]);
  return (
    <pre ref={ref} className="logs" data-live={live ? "true" : "false"}>
      {logs || (live ? "waiting for output…" : "(no output)")}
    </pre>
  );
}

/** Start the same thing again with the same arguments; answers the new job's id. */
async function rerun(job: Job): Promise<string> {
  const args = job.args ?? {};
  if (job.job_kind === "flow" && job.script_path) {
    return apiText(ws(`/jobs/run/f/${job.script_path}`), { body: args });
  }
  if (job.job_kind === "flowpreview" && job.raw_flow) {
    return apiText(ws("/jobs/run/preview_flow"), { body: { value: job.raw_flow, args } });
  }
  if (job.script_hash) {
    return apiText(ws(`/jobs/run/h/${job.script_hash}`), { body: args });
  }
  if (job.script_path && job.job_kind === "script") {
    return apiText(ws(`/jobs/run/p/${job.script_path}`), { body: args });
  }
  const full = await apiJson<Job & { raw_code: string | null }>(ws(`/jobs_u/get/${job.id}`), { query: { no_logs: true } });
  return apiText(ws("/jobs/run/preview"), {
    body: { language: full.language, content: full.raw_code ?? "", args, path: full.script_path ?? undefined },
  });
}

function Approvals({ job, steps }: { job: Job; steps: { id: string; job: string }[] }) {
  const [error, setError] = useState<Error | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  if (steps.length === 0) return null;
  const approve = async (step: string) => {
    setBusy(step);
    setError(null);
    try {
      await apiText(ws(`/jobs/flow/resume/${step}`), { body: {} });
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(null);
    }
  };
  const deny = async (step: string) => {
    setBusy(step);
    setError(null);
    try {
      const nonce = Math.floor(Math.random() * 1e15);
      const urls = await apiJson<{ cancel: string }>(ws(`/jobs/resume_urls/${step}/${nonce}`));
      await apiText(new URL(urls.cancel, window.location.origin).pathname, { body: {} });
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(null);
    }
  };
  return (
    <div className="approvals" data-flow={job.id}>
      {steps.map((step) => (
        <div className="approval" key={step.job} data-step={step.id}>
          <span>
            Step <strong>{step.id}</strong> waits for an approval.
          </span>
          <button className="primary" disabled={busy !== null} onClick={() => approve(step.job)}>
            Approve {step.id}
          </button>
          <button className="danger" disabled={busy !== null} onClick={() => deny(step.job)}>
            Deny {step.id}
          </button>
        </div>
      ))}
      <ErrorBox error={error} />
    </div>
  );
}

/**
 * Each loop's iterations (child flow runs) with how each ended: picking one shows its
 * steps' statuses in the graph; the link opens that iteration's run.
 */
function Iterations({ loops, onPick }: { loops: GraphNode[]; onPick: (loop: string, index: number) => void }) {
  if (loops.length === 0) return null;
  return (
    <div className="iterations">
      {loops.map((loop) => (
        <div key={loop.id} data-loop={loop.id} role="group" aria-label={`${loop.id} iterations`}>
          <strong>{loop.id}</strong> iterations:{" "}
          {loop.iterations!.map((iteration, i) => (
            <button
              key={iteration.job}
              type="button"
              className={`iteration badge badge-${iteration.state}${i === loop.shownIteration ? " shown" : ""}`}
              data-state={iteration.state}
              aria-pressed={i === loop.shownIteration}
              title={`show the steps of iteration ${i + 1}`}
              onClick={() => onPick(loop.id, i)}
            >
              #{i + 1}
            </button>
          ))}
          {loop.shownIteration != null && (
            <Link className="iteration-run" to={`/runs/${loop.iterations![loop.shownIteration].job}`}>
              open iteration {loop.shownIteration + 1}
            </Link>
          )}
        </div>
      ))}
    </div>
  );
}

/** The flow's graph with the statuses inside its loops and branches, followed live. */
function FlowRun({ job, status, waiting }: { job: Job; status: FlowStatus | null | undefined; waiting: { id: string; job: string }[] }) {
  /** The iteration shown of each loop (by module id); none picked: the latest. */
  const [selected, setSelected] = useState<Record<string, number>>({});
  const [wanted, setWanted] = useState<ChildRef[]>([]);
  const children = useChildFlowStatuses(wanted);
  const graph = useMemo(() => buildFlowGraph(job.raw_flow!, status, { children, selected }), [job.raw_flow, status, children, selected]);
  const childKey = graph.children.map((c) => c.job).join(",");
  useEffect(() => setWanted(graph.children), [childKey]); // eslint-disable-line react-hooks/exhaustive-deps
  const loops = graph.nodes.filter((n) => n.iterations && n.iterations.length > 0);
  // Steps inside a loop iteration or a branch wait for approvals too (those shown).
  const inner = graph.nodes
    .filter((n) => n.state === "suspended" && n.job && !waiting.some((w) => w.job === n.job))
    .map((n) => ({ id: n.id, job: n.job! }));
  const steps = job.type === "QueuedJob" ? [...waiting, ...inner] : waiting;
  return (
    <section>
      <h2>Steps</h2>
      <Approvals job={job} steps={steps} />
      <FlowGraphView flow={job.raw_flow!} graph={graph} height={420} />
      <Iterations loops={loops} onPick={(loop, index) => setSelected((previous) => ({ ...previous, [loop]: index }))} />
    </section>
  );
}

export function JobPage() {
  const id = useParams().id!;
  const navigate = useNavigate();
  const initial = useAsync(() => apiJson<Job>(ws(`/jobs_u/get/${id}`)), [id]);
  const follow = initial.data && initial.data.type === "QueuedJob" ? id : null;
  const stream = useJobStream(follow);
  const [actionError, setActionError] = useState<Error | null>(null);

  if (initial.loading && !initial.data) return <Loading what="Loading the run" />;
  if (initial.error) {
    return (
      <div className="page">
        <h1>Run {id}</h1>
        <ErrorBox error={initial.error} />
      </div>
    );
  }
  const loaded = initial.data!;
  const job: Job = stream.job ?? (follow && stream.running ? { ...loaded, running: true } : loaded);
  const logs = follow ? stream.logs : (loaded.logs ?? "");
  const live = follow !== null && !stream.completed;
  const flowStatus = stream.flowStatus ?? job.flow_status ?? loaded.flow_status;
  const waiting = job.type === "QueuedJob" && !stream.completed ? suspendedSteps(flowStatus) : [];
  const status = waiting.length > 0 ? "suspended" : jobStatus(job);

  const act = async (action: () => Promise<string>, go: boolean) => {
    setActionError(null);
    try {
      const answer = await action();
      if (go) navigate(`/runs/${answer.trim()}`);
    } catch (err) {
      setActionError(err as Error);
    }
  };

  return (
    <div className="page job-page" data-status={status}>
      <h1>
        Run <span className="mono">{id.slice(0, 8)}</span> <StatusBadge status={status} />
      </h1>
      <div className="actions">
        {job.type === "QueuedJob" && !stream.completed && (
          <button className="danger" onClick={() => act(() => apiText(ws(`/jobs_u/queue/cancel/${id}`), { body: {} }), false)}>
            Cancel
          </button>
        )}
        <button onClick={() => act(() => rerun(job), true)}>Re-run with the same arguments</button>
        {job.script_path && job.job_kind !== "flow" && job.job_kind !== "preview" && (
          <Link className="button" to={`/scripts/get/${job.script_path}`}>Script</Link>
        )}
        {job.script_path && job.job_kind === "flow" && (
          <Link className="button" to={`/flows/get/${job.script_path}`}>Flow</Link>
        )}
      </div>
      <ErrorBox error={actionError} />
      <ErrorBox error={stream.error} />
      <dl className="facts">
        <dt>Runs</dt>
        <dd>{runnableOf(job)} <span className="hint">({job.job_kind}{job.language ? `, ${job.language}` : ""})</span></dd>
        <dt>Trigger</dt>
        <dd>{job.trigger_kind}{job.trigger ? `: ${job.trigger}` : ""}</dd>
        <dt>Created</dt>
        <dd>{formatTime(job.created_at)} by {job.created_by}</dd>
        <dt>Started</dt>
        <dd>{formatTime(job.started_at) || "not yet"}</dd>
        {job.type === "CompletedJob" && (
          <>
            <dt>Completed</dt>
            <dd>{formatTime(job.completed_at)}</dd>
            <dt>Duration</dt>
            <dd className="duration">{formatDuration(job.duration_ms)}</dd>
            <dt>Exit</dt>
            <dd>{job.exit_reason}</dd>
          </>
        )}
        {job.worker && (
          <>
            <dt>Worker</dt>
            <dd>{job.worker} (attempt {job.attempt}, tag {job.tag})</dd>
          </>
        )}
        {job.mem_peak != null && (
          <>
            <dt>Memory peak</dt>
            <dd>{Math.round(job.mem_peak / 1024)} MiB</dd>
          </>
        )}
        {job.parent_job && (
          <>
            <dt>Part of</dt>
            <dd>
              <Link to={`/runs/${job.root_job ?? job.parent_job}`}>{(job.root_job ?? job.parent_job).slice(0, 8)}</Link>
              {job.flow_step_id && ` (step ${job.flow_step_id})`}
            </dd>
          </>
        )}
      </dl>
      {job.raw_flow && <FlowRun key={id} job={job} status={flowStatus} waiting={waiting} />}
      <div className="split">
        <section className="pane">
          <h2>Arguments</h2>
          <JsonTree value={job.args ?? {}} />
        </section>
        <section className="pane">
          <h2>Result</h2>
          {job.type === "CompletedJob" ? (
            <ResultView value={job.result} />
          ) : (
            <p className="hint">{job.running || stream.running ? "running…" : "waiting for a worker…"}</p>
          )}
        </section>
      </div>
      <section>
        <h2>Logs {live && <span className="badge badge-running">live</span>}</h2>
        <LogView logs={logs} live={live} />
      </section>
    </div>
  );
}
