import type { ReactNode } from "react";
import { Link } from "react-router-dom";
import type { Job } from "../lib/types";

export function Loading({ what = "Loading" }: { what?: string }) {
  return (
    <div className="loading" role="status">
      {what}…
    </div>
  );
}

export function ErrorBox({ error, title }: { error: Error | string | undefined | null; title?: string }) {
  if (!error) return null;
  const message = typeof error === "string" ? error : error.message;
  const location = typeof error === "object" && "location" in error ? (error as { location?: string }).location : undefined;
  return (
    <div className="error-box" role="alert">
      {title && <strong>{title}: </strong>}
      {message}
      {location && <span className="location"> (at {location})</span>}
    </div>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="empty">{children}</div>;
}

export type JobStatus = "queued" | "running" | "success" | "failure" | "canceled" | "suspended";

export function jobStatus(job: Job): JobStatus {
  if (job.type === "CompletedJob") {
    if (job.status === "canceled" || job.canceled) return "canceled";
    return job.success ? "success" : "failure";
  }
  return job.running ? "running" : "queued";
}

export function StatusBadge({ status }: { status: string }) {
  return <span className={`badge badge-${status}`} data-status={status}>{status}</span>;
}

export function formatDuration(ms: number | null | undefined): string {
  if (ms == null) return "";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export function formatTime(iso: string | null | undefined): string {
  if (!iso) return "";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { hour12: false });
}

export function JobLink({ id }: { id: string }) {
  return <Link to={`/runs/${id}`} className="mono">{id.slice(0, 8)}</Link>;
}

export function runnableOf(job: Job): string {
  if (job.script_path) return job.script_path;
  if (job.job_kind === "preview") return "(preview)";
  if (job.job_kind === "flowpreview") return "(flow preview)";
  return `(${job.job_kind})`;
}

/** Ctrl+Enter (or Cmd+Enter) runs ``action``. */
export function onCtrlEnter(action: () => void) {
  return (event: React.KeyboardEvent) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      action();
    }
  };
}
