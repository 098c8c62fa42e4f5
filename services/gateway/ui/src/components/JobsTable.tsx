import { Link } from "react-router-dom";
import type { Job } from "../lib/types";
import { formatDuration, formatTime, jobStatus, runnableOf, StatusBadge } from "./common";

export function JobsTable({ jobs }: { jobs: Job[] }) {
  return (
    <table className="list runs-table">
      <thead>
        <tr>
          <th>Status</th>
          <th>Run</th>
          <th>Script or flow</th>
          <th>Kind</th>
          <th>Trigger</th>
          <th>Created</th>
          <th>Duration</th>
          <th>By</th>
        </tr>
      </thead>
      <tbody>
        {jobs.map((job) => (
          <tr key={job.id} data-job={job.id}>
            <td>
              <StatusBadge status={jobStatus(job)} />
            </td>
            <td>
              <Link to={`/runs/${job.id}`} className="mono">
                {job.id.slice(0, 8)}
              </Link>
            </td>
            <td>{runnableOf(job)}</td>
            <td>{job.job_kind}</td>
            <td>{job.trigger_kind}</td>
            <td>{formatTime(job.created_at)}</td>
            <td>{job.type === "CompletedJob" ? formatDuration(job.duration_ms) : ""}</td>
            <td>{job.created_by}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
