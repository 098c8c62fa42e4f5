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

export function VariablesPage() {
  const variables = useAsync(() => apiJson<Variable[]>(ws("/variables/list")), []);
  const [path, setPath] = useState("");
  const [value, setValue] = useState("");
  const [secret, setSecret] = useState(true);
  const [error, setError] = useState<Error | null>(null);
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
      <ErrorBox error={variables.error} />
      {variables.data && variables.data.length === 0 && <Empty>No variables yet.</Empty>}
      {variables.data && variables.data.length > 0 && (
        <table className="list">
          <thead>
            <tr>
              <th>Path</th>
              <th>Value</th>
              <th>Description</th>
            </tr>
          </thead>
          <tbody>
            {variables.data.map((v) => (
              <tr key={v.path}>
                <td>{v.path}</td>
                <td className="mono">{v.is_secret ? <span className="hint">secret (never shown)</span> : v.value}</td>
                <td>{v.description}</td>
              </tr>
            ))}
          </tbody>
        </table>
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
