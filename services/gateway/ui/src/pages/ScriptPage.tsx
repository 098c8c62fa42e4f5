import { useEffect, useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { apiJson, apiText, ws } from "../lib/api";
import { initialValues } from "../lib/schemaForm";
import type { Script } from "../lib/types";
import { useAsync } from "../lib/useAsync";
import { CodeEditor } from "../components/CodeEditor";
import { ErrorBox, formatTime, Loading } from "../components/common";
import { SchemaForm } from "../components/SchemaForm";
import { VersionDiff } from "../components/VersionDiff";

export function ScriptPage() {
  const path = useParams()["*"] ?? "";
  const navigate = useNavigate();
  const script = useAsync(() => apiJson<Script>(ws(`/scripts/get/p/${path}`)), [path]);
  const [args, setArgs] = useState<Record<string, unknown>>({});
  const [runError, setRunError] = useState<Error | null>(null);
  const [busy, setBusy] = useState(false);
  const [compare, setCompare] = useState<string | null>(null);
  const [actionError, setActionError] = useState<Error | null>(null);
  /** Archive (it leaves listings, no longer runs by path) or delete (admins) every version. */
  const retire = async (how: "archive" | "delete") => {
    const question =
      how === "archive"
        ? `Archive ${path}? It leaves the listings and no longer runs by path.`
        : `Delete ${path} and every version of it? This cannot be undone.`;
    if (!window.confirm(question)) return;
    setActionError(null);
    try {
      await apiText(ws(`/scripts/${how}/p/${path}`), { body: {} });
      navigate("/scripts");
    } catch (err) {
      setActionError(err as Error);
    }
  };
  useEffect(() => {
    if (script.data) setArgs(initialValues(script.data.schema));
  }, [script.data]);

  const run = async (values: Record<string, unknown>) => {
    setBusy(true);
    setRunError(null);
    try {
      const id = await apiText(ws(`/jobs/run/p/${path}`), { body: values });
      navigate(`/runs/${id}`);
    } catch (err) {
      setRunError(err as Error);
      setBusy(false);
    }
  };

  if (script.loading && !script.data) return <Loading />;
  if (script.error) return <div className="page"><ErrorBox error={script.error} /></div>;
  const s = script.data!;
  return (
    <div className="page">
      <h1>{s.path}</h1>
      {s.summary && <p className="summary">{s.summary}</p>}
      <div className="actions">
        <Link className="button" to={`/scripts/edit/${s.path}`}>Edit</Link>
        <Link className="button" to={`/runs?path=${encodeURIComponent(s.path)}`}>Runs</Link>
        <Link className="button" to={`/schedules?script=${encodeURIComponent(s.path)}`}>Schedule</Link>
        <Link className="button" to={`/triggers?script=${encodeURIComponent(s.path)}`}>Triggers</Link>
        <button onClick={() => retire("archive")}>Archive</button>
        <button className="danger" onClick={() => retire("delete")}>Delete</button>
      </div>
      <ErrorBox error={actionError} />
      <div className="split">
        <section className="pane">
          <h2>Run</h2>
          <SchemaForm schema={s.schema} value={args} onChange={setArgs} onSubmit={run} busy={busy} />
          <ErrorBox error={runError} title="Not started" />
        </section>
        <section className="pane">
          <h2>Code <span className="hint">{s.language}</span></h2>
          <CodeEditor value={s.content} language={s.language} readOnly height="360px" />
          <h2>Versions</h2>
          <ul className="versions">
            <li>
              <span className="mono">{s.hash}</span> (current, {formatTime(s.created_at)} by {s.created_by})
            </li>
            {s.parent_hashes.map((hash) => (
              <li key={hash}>
                <span className="mono">{hash}</span>{" "}
                <button className="link" onClick={() => setCompare(compare === hash ? null : hash)}>
                  {compare === hash ? "hide changes" : "changes since"}
                </button>
              </li>
            ))}
          </ul>
          {compare && <VersionDiff before={compare} after={s.content} />}
        </section>
      </div>
    </div>
  );
}
