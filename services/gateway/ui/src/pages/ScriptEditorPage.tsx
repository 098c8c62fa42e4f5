import { useEffect, useRef, useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { ApiError, apiJson, apiText, ws } from "../lib/api";
import { initialValues } from "../lib/schemaForm";
import { TEMPLATES } from "../lib/templates";
import type { JsonSchema, Script } from "../lib/types";
import { CodeEditor, LANGUAGES } from "../components/CodeEditor";
import { ErrorBox, Loading, onCtrlEnter } from "../components/common";
import { SchemaForm } from "../components/SchemaForm";

const PREVIEW_DELAY_MS = 250;

/** The schema of the code as the gateway reads it, refreshed as the author types. */
function useParsedSchema(language: string, content: string) {
  const [schema, setSchema] = useState<JsonSchema | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const generation = useRef(0);
  useEffect(() => {
    const mine = ++generation.current;
    const timer = setTimeout(() => {
      apiJson<{ schema: JsonSchema }>("/api/scripts/parse_schema", { body: { language, content } }).then(
        (answer) => {
          if (mine !== generation.current) return;
          setSchema(answer.schema);
          setError(null);
        },
        (err: ApiError) => {
          if (mine === generation.current) setError(err);
        },
      );
    }, PREVIEW_DELAY_MS);
    return () => clearTimeout(timer);
  }, [language, content]);
  return { schema, error };
}

export function ScriptEditorPage() {
  const existing = useParams()["*"] ?? "";
  const navigate = useNavigate();
  const [loaded, setLoaded] = useState<Script | null>(null);
  const [loadError, setLoadError] = useState<Error | null>(null);
  const [path, setPath] = useState(existing);
  const [summary, setSummary] = useState("");
  const [language, setLanguage] = useState("python3");
  const [content, setContent] = useState(TEMPLATES.python3!);
  const [args, setArgs] = useState<Record<string, unknown>>({});
  const [saveError, setSaveError] = useState<Error | null>(null);
  const [saving, setSaving] = useState(false);
  const { schema, error: parseError } = useParsedSchema(language, content);
  const lastSchema = useRef<string>("");

  useEffect(() => {
    if (!existing) return;
    apiJson<Script>(ws(`/scripts/get/p/${existing}`)).then(
      (script) => {
        setLoaded(script);
        setPath(script.path);
        setSummary(script.summary);
        setLanguage(script.language);
        setContent(script.content);
      },
      (err: Error) => setLoadError(err),
    );
  }, [existing]);

  useEffect(() => {
    // New inputs or defaults: start the preview from the defaults again.
    const key = JSON.stringify(schema);
    if (schema && key !== lastSchema.current) {
      lastSchema.current = key;
      setArgs(initialValues(schema));
    }
  }, [schema]);

  const save = async () => {
    setSaving(true);
    setSaveError(null);
    try {
      await apiText(ws("/scripts/create"), {
        body: { path, summary, language, content, parent_hash: loaded?.hash ?? undefined },
      });
      navigate(`/scripts/get/${path}`);
    } catch (err) {
      setSaveError(err as Error);
    } finally {
      setSaving(false);
    }
  };

  const runPreview = async () => {
    setSaveError(null);
    try {
      const id = await apiText(ws("/jobs/run/preview"), { body: { language, content, args, path: path || undefined } });
      navigate(`/runs/${id}`);
    } catch (err) {
      setSaveError(err as Error);
    }
  };

  if (existing && !loaded && !loadError) return <Loading what="Loading the script" />;
  return (
    <div className="page editor-page" onKeyDown={onCtrlEnter(save)}>
      <h1>{existing ? `Edit ${existing}` : "New script"}</h1>
      <ErrorBox error={loadError} />
      <div className="editor-header">
        <label>
          Path
          <input
            name="path"
            value={path}
            placeholder="u/admin/my_script"
            onChange={(e) => setPath(e.target.value)}
            readOnly={Boolean(existing)}
          />
        </label>
        <label>
          Summary
          <input name="summary" value={summary} onChange={(e) => setSummary(e.target.value)} />
        </label>
        <label>
          Language
          <select
            name="language"
            value={language}
            onChange={(e) => {
              const next = e.target.value;
              if (!existing && content === TEMPLATES[language]) setContent(TEMPLATES[next] ?? "");
              setLanguage(next);
            }}
          >
            {LANGUAGES.map((l) => (
              <option key={l.id} value={l.id}>
                {l.label}
              </option>
            ))}
          </select>
        </label>
        <div className="actions">
          <button className="primary" onClick={save} disabled={saving || !path} title="Ctrl+Enter">
            {saving ? "Saving…" : existing ? "Save new version" : "Save"}
          </button>
          <button onClick={runPreview}>Test run</button>
          {existing && <Link to={`/scripts/get/${existing}`}>Back to the script</Link>}
        </div>
      </div>
      <ErrorBox error={saveError} title="Not saved" />
      <div className="split">
        <section className="pane">
          <CodeEditor value={content} onChange={setContent} language={language} height="520px" />
        </section>
        <section className="pane preview">
          <h2>Form preview</h2>
          {parseError && (
            <div className="error-box parse-error" role="alert">
              {parseError.message}
              {parseError.location && <span className="location"> ({parseError.location})</span>}
            </div>
          )}
          {schema && <SchemaForm schema={schema} value={args} onChange={setArgs} preview />}
          <details className="schema-json">
            <summary>Schema</summary>
            <pre>{JSON.stringify(schema, null, 2)}</pre>
          </details>
        </section>
      </div>
    </div>
  );
}
