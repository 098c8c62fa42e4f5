import { useEffect, useMemo, useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { ApiError, apiJson, apiText, ws } from "../lib/api";
import { flowToText, moduleAtLocation, NEW_FLOW, parseFlowText, type FlowFormat } from "../lib/flowDocument";
import { initialValues } from "../lib/schemaForm";
import type { Flow } from "../lib/types";
import { CodeEditor } from "../components/CodeEditor";
import { ErrorBox, Loading, onCtrlEnter } from "../components/common";
import { FlowGraphView } from "../components/FlowGraphView";
import { SchemaForm } from "../components/SchemaForm";

export function FlowEditorPage() {
  const existing = useParams()["*"] ?? "";
  const navigate = useNavigate();
  const [path, setPath] = useState(existing);
  const [format, setFormat] = useState<FlowFormat>("yaml");
  const [text, setText] = useState(existing ? "" : NEW_FLOW);
  const [loading, setLoading] = useState(Boolean(existing));
  const [loadError, setLoadError] = useState<Error | null>(null);
  const [saveError, setSaveError] = useState<ApiError | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const [args, setArgs] = useState<Record<string, unknown>>({});
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (!existing) return;
    apiJson<Flow>(ws(`/flows/get/${existing}`)).then(
      (flow) => {
        setText(flowToText(flow, "yaml"));
        setLoading(false);
      },
      (err: Error) => {
        setLoadError(err);
        setLoading(false);
      },
    );
  }, [existing]);

  const parsed = useMemo(() => parseFlowText(text, format), [text, format]);
  const [lastGood, setLastGood] = useState(parsed.flow);
  useEffect(() => {
    if (parsed.flow) setLastGood(parsed.flow);
  }, [parsed.flow]);
  const schemaKey = JSON.stringify(lastGood?.schema ?? null);
  useEffect(() => {
    setArgs(initialValues(lastGood?.schema));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [schemaKey]);

  const switchFormat = (next: FlowFormat) => {
    if (next === format) return;
    if (parsed.flow) setText(flowToText(parsed.flow, next));
    setFormat(next);
  };

  const save = async () => {
    if (!parsed.flow) return;
    setSaveError(null);
    setSaved(null);
    try {
      const body = { ...parsed.flow, path };
      if (existing) await apiText(ws(`/flows/update/${existing}`), { body });
      else await apiText(ws("/flows/create"), { body });
      setSaved(`saved ${path}`);
      if (!existing) navigate(`/flows/get/${path}`, { replace: true });
    } catch (err) {
      setSaveError(err as ApiError);
    }
  };

  const run = async (values: Record<string, unknown>) => {
    if (!parsed.flow) return;
    setBusy(true);
    setSaveError(null);
    try {
      const id = existing
        ? await apiText(ws(`/jobs/run/f/${existing}`), { body: values })
        : await apiText(ws("/jobs/run/preview_flow"), { body: { value: parsed.flow.value, args: values } });
      navigate(`/runs/${id.trim()}`);
    } catch (err) {
      setSaveError(err as ApiError);
      setBusy(false);
    }
  };

  if (loading) return <Loading what="Loading the flow" />;
  const badModule = saveError ? moduleAtLocation(lastGood?.value, saveError.location) : null;
  return (
    <div className="page flow-editor" onKeyDown={onCtrlEnter(save)}>
      <h1>{existing ? existing : "New flow"}</h1>
      <ErrorBox error={loadError} />
      <div className="editor-header">
        <label>
          Path
          <input name="path" value={path} onChange={(e) => setPath(e.target.value)} readOnly={Boolean(existing)} placeholder="f/team/my_flow" />
        </label>
        <div className="segmented">
          <button className={format === "yaml" ? "active" : ""} onClick={() => switchFormat("yaml")}>YAML</button>
          <button className={format === "json" ? "active" : ""} onClick={() => switchFormat("json")}>JSON</button>
        </div>
        <div className="actions">
          <button className="primary" onClick={save} disabled={!parsed.flow || !path} title="Ctrl+Enter">
            Save
          </button>
          {existing && <Link to={`/runs?path=${encodeURIComponent(existing)}`}>Runs</Link>}
          {saved && <span className="ok">{saved}</span>}
        </div>
      </div>
      {parsed.error && (
        <div className="error-box" role="alert" data-kind="syntax">
          {parsed.error.message}
          {parsed.error.line !== undefined && <span className="location"> (line {parsed.error.line})</span>}
        </div>
      )}
      {saveError && (
        <div className="error-box" role="alert" data-kind="validation">
          <strong>Not saved: </strong>
          {saveError.message}
          {saveError.location && <span className="location"> (at {saveError.location})</span>}
          {badModule && <span className="module"> in module <strong>{badModule}</strong></span>}
        </div>
      )}
      <div className="split">
        <section className="pane">
          <CodeEditor value={text} onChange={setText} language={format} height="560px" />
        </section>
        <section className="pane">
          <h2>Graph</h2>
          {lastGood ? <FlowGraphView flow={lastGood.value} height={360} flagged={badModule} /> : <p className="hint">Fix the document to see its graph.</p>}
          <h2>Run</h2>
          <SchemaForm
            schema={lastGood?.schema}
            value={args}
            onChange={setArgs}
            onSubmit={run}
            busy={busy}
            submitLabel={existing ? "Run" : "Test run"}
          />
        </section>
      </div>
    </div>
  );
}
