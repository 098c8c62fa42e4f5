import { useState } from "react";
import { apiJson, apiText, ws } from "../lib/api";
import { useAsync } from "../lib/useAsync";
import { Empty, ErrorBox, Loading } from "../components/common";

interface Variable {
  path: string;
  value: string | null;
  is_secret: boolean;
  description: string;
}

/** Change a variable's value, description or secrecy; an empty value keeps a secret's. */
function EditVariable({ variable, onDone }: { variable: Variable; onDone: (changed: boolean) => void }) {
  const [value, setValue] = useState(variable.is_secret ? "" : (variable.value ?? ""));
  const [description, setDescription] = useState(variable.description);
  const [error, setError] = useState<Error | null>(null);
  const save = async (event: React.FormEvent) => {
    event.preventDefault();
    setError(null);
    const body: Record<string, unknown> = { description };
    if (!variable.is_secret || value !== "") body.value = value;
    try {
      await apiText(ws(`/variables/update/${variable.path}`), { body });
      onDone(true);
    } catch (err) {
      setError(err as Error);
    }
  };
  return (
    <form className="card edit-variable" onSubmit={save} data-variable={variable.path}>
      <h3>Edit {variable.path}</h3>
      <label>
        Value
        <input
          name="edit_value"
          type={variable.is_secret ? "password" : "text"}
          autoComplete="new-password"
          value={value}
          placeholder={variable.is_secret ? "kept unless you type a new one" : ""}
          onChange={(e) => setValue(e.target.value)}
        />
      </label>
      <label>
        Description
        <input name="edit_description" value={description} onChange={(e) => setDescription(e.target.value)} />
      </label>
      <ErrorBox error={error} />
      <div className="actions">
        <button className="primary" type="submit">Save</button>
        <button type="button" onClick={() => onDone(false)}>Cancel</button>
      </div>
    </form>
  );
}

export function VariablesPage() {
  const variables = useAsync(() => apiJson<Variable[]>(ws("/variables/list")), []);
  const [path, setPath] = useState("");
  const [value, setValue] = useState("");
  const [secret, setSecret] = useState(true);
  const [error, setError] = useState<Error | null>(null);
  const [editing, setEditing] = useState<string | null>(null);
  const [rowError, setRowError] = useState<Error | null>(null);
  const remove = async (variable: Variable) => {
    if (!window.confirm(`Delete the variable ${variable.path}?`)) return;
    setRowError(null);
    try {
      await apiText(ws(`/variables/delete/${variable.path}`), { method: "DELETE" });
      if (editing === variable.path) setEditing(null);
      variables.reload();
    } catch (err) {
      setRowError(err as Error);
    }
  };
  const edited = variables.data?.find((v) => v.path === editing);
  const create = async (event: React.FormEvent) => {
    event.preventDefault();
    setError(null);
    try {
      await apiText(ws("/variables/create"), { body: { path, value, is_secret: secret, description: "" } });
      setPath("");
      setValue("");
      variables.reload();
    } catch (err) {
      setError(err as Error);
    }
  };
  return (
    <div className="page">
      <h1>Variables and secrets</h1>
      {variables.loading && !variables.data && <Loading />}
      <ErrorBox error={variables.error ?? rowError} />
      {variables.data && variables.data.length === 0 && <Empty>No variables yet.</Empty>}
      {variables.data && variables.data.length > 0 && (
        <table className="list">
          <thead>
            <tr>
              <th>Path</th>
              <th>Value</th>
              <th>Description</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {variables.data.map((v) => (
              <tr key={v.path} data-variable={v.path}>
                <td>{v.path}</td>
                <td className="mono">{v.is_secret ? <span className="hint">secret (never shown)</span> : v.value}</td>
                <td>{v.description}</td>
                <td className="row-actions">
                  <button onClick={() => setEditing(v.path)} aria-label={`edit ${v.path}`}>Edit</button>
                  <button className="danger" onClick={() => remove(v)} aria-label={`delete ${v.path}`}>Delete</button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {edited && (
        <EditVariable
          key={edited.path}
          variable={edited}
          onDone={(changed) => {
            setEditing(null);
            if (changed) variables.reload();
          }}
        />
      )}
      <form className="card" onSubmit={create}>
        <h2>New variable</h2>
        <label>
          Path
          <input name="path" value={path} onChange={(e) => setPath(e.target.value)} placeholder="u/admin/api_key" required />
        </label>
        <label>
          Value
          <input name="value" type={secret ? "password" : "text"} value={value} onChange={(e) => setValue(e.target.value)} />
        </label>
        <label className="inline">
          <input type="checkbox" checked={secret} onChange={(e) => setSecret(e.target.checked)} /> secret
        </label>
        <ErrorBox error={error} />
        <button className="primary" type="submit">Create</button>
      </form>
    </div>
  );
}
