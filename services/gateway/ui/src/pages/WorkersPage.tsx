import { Link } from "react-router-dom";
import { apiJson } from "../lib/api";
import { useAsync } from "../lib/useAsync";
import { Empty, ErrorBox, formatTime, Loading } from "../components/common";

interface Worker {
  worker: string;
  worker_group: string;
  tags: string[];
  last_ping: number;
  started_at: string;
  jobs_executed: number;
  current_job_id: string | null;
  sandbox?: string | boolean | null;
  memory_kb?: number | null;
}

export function WorkersPage() {
  const workers = useAsync(() => apiJson<Worker[]>("/api/workers/list"), []);
  return (
    <div className="page">
      <h1>Workers</h1>
      <button onClick={workers.reload}>Refresh</button>
      {workers.loading && !workers.data && <Loading />}
      <ErrorBox error={workers.error} />
      {workers.data && workers.data.length === 0 && <Empty>No live workers: jobs wait in the queue until one starts.</Empty>}
      {workers.data && workers.data.length > 0 && (
        <table className="list">
          <thead>
            <tr>
              <th>Worker</th>
              <th>Group</th>
              <th>Tags</th>
              <th>Last ping</th>
              <th>Started</th>
              <th>Jobs done</th>
              <th>Current job</th>
              <th>Sandbox</th>
            </tr>
          </thead>
          <tbody>
            {workers.data.map((w) => (
              <tr key={w.worker}>
                <td className="mono">{w.worker}</td>
                <td>{w.worker_group}</td>
                <td>{w.tags.join(", ")}</td>
                <td>{w.last_ping.toFixed(1)} s ago</td>
                <td>{formatTime(w.started_at)}</td>
                <td>{w.jobs_executed}</td>
                <td>{w.current_job_id ? <Link to={`/runs/${w.current_job_id}`}>{w.current_job_id.slice(0, 8)}</Link> : ""}</td>
                <td>{w.sandbox === undefined || w.sandbox === null ? "" : String(w.sandbox)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
