import { useState } from "react";
import { Link } from "react-router-dom";
import { apiJson, ws } from "../lib/api";
import type { Flow } from "../lib/types";
import { useAsync } from "../lib/useAsync";
import { Empty, ErrorBox, formatTime, Loading } from "../components/common";

export function FlowsPage() {
  const [search, setSearch] = useState("");
  const flows = useAsync(() => apiJson<Flow[]>(ws("/flows/list"), { query: { per_page: 1000 } }), []);
  const needle = search.trim().toLowerCase();
  const shown = (flows.data ?? []).filter(
    (f) => !needle || f.path.toLowerCase().includes(needle) || (f.summary ?? "").toLowerCase().includes(needle),
  );
  return (
    <div className="page">
      <h1>Flows</h1>
      <div className="actions">
        <input type="search" placeholder="Search flows" value={search} onChange={(e) => setSearch(e.target.value)} />
        <Link className="button primary" to="/flows/new">New flow</Link>
      </div>
      {flows.loading && !flows.data && <Loading />}
      <ErrorBox error={flows.error} />
      {flows.data && flows.data.length === 0 && (
        <Empty>
          No flows yet. <Link to="/flows/new">Compose one</Link> from steps, loops and branches.
        </Empty>
      )}
      {shown.length > 0 && (
        <table className="list">
          <thead>
            <tr>
              <th>Path</th>
              <th>Summary</th>
              <th>Steps</th>
              <th>Edited</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((f) => (
              <tr key={f.path}>
                <td>
                  <Link to={`/flows/get/${f.path}`}>{f.path}</Link>
                </td>
                <td>{f.summary}</td>
                <td>{f.value?.modules?.length ?? 0}</td>
                <td>{formatTime(f.edited_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
