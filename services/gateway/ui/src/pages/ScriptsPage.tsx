import { useState } from "react";
import { Link } from "react-router-dom";
import { apiJson, ws } from "../lib/api";
import type { Script } from "../lib/types";
import { useAsync } from "../lib/useAsync";
import { Empty, ErrorBox, formatTime, Loading } from "../components/common";

export function ScriptsPage() {
  const [search, setSearch] = useState("");
  const scripts = useAsync(() => apiJson<Script[]>(ws("/scripts/list"), { query: { per_page: 1000 } }), []);
  const needle = search.trim().toLowerCase();
  const shown = (scripts.data ?? []).filter(
    (s) => !needle || s.path.toLowerCase().includes(needle) || s.summary.toLowerCase().includes(needle),
  );
  return (
    <div className="page">
      <h1>Scripts</h1>
      <div className="actions">
        <input
          type="search"
          name="search"
          placeholder="Search by path or summary"
          value={search}
          onChange={(e) => setSearch(e.target.value)}
        />
        <Link className="button primary" to="/scripts/new">
          New script
        </Link>
      </div>
      {scripts.loading && !scripts.data && <Loading />}
      <ErrorBox error={scripts.error} />
      {scripts.data && scripts.data.length === 0 && (
        <Empty>
          No scripts yet. <Link to="/scripts/new">Write the first one</Link>.
        </Empty>
      )}
      {scripts.data && scripts.data.length > 0 && shown.length === 0 && <Empty>No script matches “{search}”.</Empty>}
      {shown.length > 0 && (
        <table className="list">
          <thead>
            <tr>
              <th>Path</th>
              <th>Summary</th>
              <th>Language</th>
              <th>Saved</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {shown.map((s) => (
              <tr key={s.path}>
                <td>
                  <Link to={`/scripts/get/${s.path}`}>{s.path}</Link>
                </td>
                <td>{s.summary}</td>
                <td>{s.language}</td>
                <td>{formatTime(s.created_at)}</td>
                <td>
                  <Link to={`/scripts/edit/${s.path}`}>edit</Link>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
