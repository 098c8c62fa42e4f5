import { useSearchParams } from "react-router-dom";
import { apiJson, ws } from "../lib/api";
import type { Job } from "../lib/types";
import { useAsync } from "../lib/useAsync";
import { Empty, ErrorBox, Loading } from "../components/common";
import { JobsTable } from "../components/JobsTable";

const PER_PAGE = 50;
const STATUSES = ["", "success", "failure", "running", "queued"] as const;
const TRIGGERS = ["", "api", "schedule", "http", "webhook", "kafka", "websocket", "email"];
const KINDS = ["", "script", "flow", "preview", "flowpreview", "dependencies"];

/** The list endpoint and its filters for a status. */
function listQuery(status: string): { path: string; query: Record<string, string | boolean> } {
  switch (status) {
    case "success":
      return { path: "/jobs/completed/list", query: { success: true } };
    case "failure":
      return { path: "/jobs/completed/list", query: { success: false } };
    case "running":
      return { path: "/jobs/queue/list", query: { running: true } };
    case "queued":
      return { path: "/jobs/queue/list", query: { running: false } };
    default:
      return { path: "/jobs/list", query: {} };
  }
}

export function RunsPage() {
  const [params, setParams] = useSearchParams();
  const path = params.get("path") ?? "";
  const status = params.get("status") ?? "";
  const trigger = params.get("trigger") ?? "";
  const after = params.get("after") ?? "";
  const kind = params.get("kind") ?? "";
  const page = Math.max(1, Number(params.get("page") ?? "1") || 1);
  const runs = useAsync(() => {
    const { path: endpoint, query } = listQuery(status);
    return apiJson<Job[]>(ws(endpoint), {
      query: {
        ...query,
        script_path_start: path || undefined,
        trigger_kind: trigger || undefined,
        job_kinds: kind || undefined,
        created_after: after ? new Date(after).toISOString() : undefined,
        is_flow_step: false,
        page,
        per_page: PER_PAGE,
      },
    });
  }, [path, status, trigger, kind, after, page]);
  const set = (key: string, value: string) => {
    const next = new URLSearchParams(params);
    if (value) next.set(key, value);
    else next.delete(key);
    if (key !== "page") next.delete("page");
    setParams(next, { replace: true });
  };
  return (
    <div className="page">
      <h1>Runs</h1>
      <div className="filters">
        <label>
          Path starts with
          <input name="path" value={path} onChange={(e) => set("path", e.target.value)} placeholder="u/admin/" />
        </label>
        <label>
          Status
          <select name="status" value={status} onChange={(e) => set("status", e.target.value)}>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s || "any"}
              </option>
            ))}
          </select>
        </label>
        <label>
          Trigger
          <select name="trigger" value={trigger} onChange={(e) => set("trigger", e.target.value)}>
            {TRIGGERS.map((s) => (
              <option key={s} value={s}>
                {s || "any"}
              </option>
            ))}
          </select>
        </label>
        <label>
          Kind
          <select name="kind" value={kind} onChange={(e) => set("kind", e.target.value)}>
            {KINDS.map((s) => (
              <option key={s} value={s}>
                {s || "any"}
              </option>
            ))}
          </select>
        </label>
        <label>
          Created after
          <input name="after" type="datetime-local" value={after} onChange={(e) => set("after", e.target.value)} />
        </label>
      </div>
      {runs.loading && !runs.data && <Loading />}
      <ErrorBox error={runs.error} />
      {runs.data && runs.data.length === 0 && <Empty>No runs match.</Empty>}
      {runs.data && runs.data.length > 0 && <JobsTable jobs={runs.data} />}
      <div className="pager">
        <button disabled={page <= 1} onClick={() => set("page", String(page - 1))}>
          ← Newer
        </button>
        <span>page {page}</span>
        <button disabled={(runs.data?.length ?? 0) < PER_PAGE} onClick={() => set("page", String(page + 1))}>
          Older →
        </button>
      </div>
    </div>
  );
}
