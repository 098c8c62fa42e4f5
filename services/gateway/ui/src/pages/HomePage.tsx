import { Link } from "react-router-dom";
import { apiJson, ws } from "../lib/api";
import type { Job } from "../lib/types";
import { useAsync } from "../lib/useAsync";
import { Empty, ErrorBox, Loading } from "../components/common";
import { JobsTable } from "../components/JobsTable";

export function HomePage() {
  const runs = useAsync(
    () => apiJson<Job[]>(ws("/jobs/list"), { query: { per_page: 15, is_flow_step: false } }),
    [],
  );
  return (
    <div className="page">
      <h1>Home</h1>
      <div className="actions">
        <Link className="button primary" to="/scripts/new">New script</Link>
        <Link className="button" to="/flows/new">New flow</Link>
        <Link className="button" to="/schedules">Schedules</Link>
      </div>
      <h2>
        Recent runs <Link to="/runs" className="small">all runs</Link>
      </h2>
      {runs.loading && !runs.data && <Loading />}
      <ErrorBox error={runs.error} />
      {runs.data && runs.data.length === 0 && (
        <Empty>
          No runs yet. <Link to="/scripts/new">Write a script</Link> and run it.
        </Empty>
      )}
      {runs.data && runs.data.length > 0 && <JobsTable jobs={runs.data} />}
    </div>
  );
}
