import { cellText, viewOf } from "../lib/resultView";

function JsonNode({ name, value, depth }: { name?: string; value: unknown; depth: number }) {
  const label = name !== undefined ? <span className="json-key">{name}: </span> : null;
  if (value !== null && typeof value === "object") {
    const entries = Array.isArray(value)
      ? value.map((v, i) => [String(i), v] as const)
      : Object.entries(value as Record<string, unknown>);
    const brackets = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
    if (entries.length === 0) {
      return (
        <div className="json-line">
          {label}
          {brackets.join("")}
        </div>
      );
    }
    return (
      <details open={depth < 2} className="json-node">
        <summary>
          {label}
          {brackets[0]}
          <span className="json-count">
            {entries.length} {Array.isArray(value) ? "items" : "keys"}
          </span>
          {brackets[1]}
        </summary>
        <div className="json-children">
          {entries.map(([key, child]) => (
            <JsonNode key={key} name={key} value={child} depth={depth + 1} />
          ))}
        </div>
      </details>
    );
  }
  return (
    <div className="json-line">
      {label}
      <span className={`json-${value === null ? "null" : typeof value}`}>{JSON.stringify(value)}</span>
    </div>
  );
}

export function JsonTree({ value }: { value: unknown }) {
  return (
    <div className="json-tree">
      <JsonNode value={value} depth={0} />
    </div>
  );
}

/** A job's result, shown by its shape. */
export function ResultView({ value }: { value: unknown }) {
  const view = viewOf(value);
  switch (view.kind) {
    case "error":
      return (
        <div className="result result-error" data-kind="error">
          <div className="error-title">
            {view.name}: {view.message}
            {view.step && <span className="hint"> (step {view.step})</span>}
          </div>
          {view.stack && <pre className="traceback">{view.stack}</pre>}
        </div>
      );
    case "image":
      return (
        <div className="result" data-kind="image">
          <img src={view.src} alt="result" className="result-image" />
        </div>
      );
    case "file":
      return (
        <div className="result" data-kind="file">
          <a href={view.href} download={view.filename} className="button">
            Download {view.filename}
          </a>
        </div>
      );
    case "table":
      return (
        <div className="result table-wrap" data-kind="table">
          <table className="result-table">
            <thead>
              <tr>
                {view.columns.map((column) => (
                  <th key={column}>{column}</th>
                ))}
              </tr>
            </thead>
            <tbody>
              {view.rows.map((row, i) => (
                <tr key={i}>
                  {view.columns.map((column) => (
                    <td key={column}>{cellText(row[column])}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      );
    case "json":
      return (
        <div className="result" data-kind="json">
          <JsonTree value={view.value} />
        </div>
      );
  }
}
