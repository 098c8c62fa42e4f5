import { useState } from "react";
import { apiJson, apiText, ws } from "../lib/api";
import { useAsync } from "../lib/useAsync";
import { Empty, ErrorBox, Loading } from "../components/common";

interface Resource {
  path: string;
  resource_type: string;
  description: string;
}

/** A new resource type: a name, and optionally a description and a JSON Schema of its values. */
function NewResourceType({ onCreated }: { onCreated: () => void }) {
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [schemaText, setSchemaText] = useState("");
  const [error, setError] = useState<Error | null>(null);
  const create = async (event: React.FormEvent) => {
    event.preventDefault();
    setError(null);
    let schema: unknown = null;
    if (schemaText.trim()) {
      try {
        schema = JSON.parse(schemaText);
      } catch (err) {
        setError(new Error(`the schema is not JSON: ${(err as Error).message}`));
        return;
      }
    }
    try {
      await apiText(ws("/resources/type/create"), { body: { name: name.trim(), description, schema } });
      setName("");
      setDescription("");
      setSchemaText("");
      onCreated();
    } catch (err) {
      setError(err as Error);
    }
  };
  return (
    <form className="card new-resource-type" onSubmit={create}>
      <h2>New resource type</h2>
      <label>
        Name
        <input name="type_name" value={name} onChange={(e) => setName(e.target.value)} placeholder="postgresql" required />
      </label>
      <label>
        Description
        <input name="type_description" value={description} onChange={(e) => setDescription(e.target.value)} />
      </label>
      <label>
        Schema of its values (JSON Schema, optional)
        <textarea
          name="type_schema"
          className="json-editor"
          rows={5}
          value={schemaText}
          onChange={(e) => setSchemaText(e.target.value)}
          placeholder='{"type": "object", "properties": {"host": {"type": "string"}}}'
        />
      </label>
      <ErrorBox error={error} />
      <button className="primary" type="submit">Create type</button>
    </form>
  );
}

export function ResourcesPage() {
  const resources = useAsync(() => apiJson<Resource[]>(ws("/resources/list")), []);
  const types = useAsync(() => apiJson<string[]>(ws("/resources/type/listnames")), []);
  const [path, setPath] = useState("");
  const [type, setType] = useState("postgresql");
  const [valueText, setValueText] = useState('{\n  "host": "localhost",\n  "port": 5432\n}');
  const [error, setError] = useState<Error | null>(null);
  const create = async (event: React.FormEvent) => {
    event.preventDefault();
    setError(null);
    try {
      const value = JSON.parse(valueText);
      await apiText(ws("/resources/create"), { body: { path, resource_type: type, value, description: "" } });
      setPath("");
      resources.reload();
    } catch (err) {
      setError(err as Error);
    }
  };
  return (
    <div className="page">
      <h1>Resources</h1>
      {resources.loading && !resources.data && <Loading />}
      <ErrorBox error={resources.error} />
      {resources.data && resources.data.filter((r) => r.resource_type !== "state").length === 0 && <Empty>No resources yet.</Empty>}
      {resources.data && resources.data.length > 0 && (
        <table className="list">
          <thead>
            <tr>
              <th>Path</th>
              <th>Type</th>
              <th>Description</th>
            </tr>
          </thead>
          <tbody>
            {resources.data
              .filter((r) => r.resource_type !== "state")
              .map((r) => (
                <tr key={r.path}>
                  <td>{r.path}</td>
                  <td>{r.resource_type}</td>
                  <td>{r.description}</td>
                </tr>
              ))}
          </tbody>
        </table>
      )}
      <form className="card" onSubmit={create}>
        <h2>New resource</h2>
        <label>
          Path
          <input name="path" value={path} onChange={(e) => setPath(e.target.value)} placeholder="u/admin/warehouse" required />
        </label>
        <label>
          Type
          <input name="resource_type" list="resource-types" value={type} onChange={(e) => setType(e.target.value)} required />
          <datalist id="resource-types">
            {(types.data ?? []).map((t) => (
              <option key={t} value={t} />
            ))}
          </datalist>
        </label>
        <label>
          Value (JSON)
          <textarea name="value" className="json-editor" rows={6} value={valueText} onChange={(e) => setValueText(e.target.value)} />
        </label>
        <ErrorBox error={error} />
        <button className="primary" type="submit">Create</button>
      </form>
      <p className="hint resource-types">
        Types: {(types.data ?? []).length === 0 ? "none yet" : (types.data ?? []).join(", ")}
      </p>
      <NewResourceType onCreated={types.reload} />
    </div>
  );
}
