import { useState } from "react";
import { Link } from "react-router-dom";
import { apiJson, apiText, ws } from "../lib/api";
import { useAsync } from "../lib/useAsync";
import { Empty, ErrorBox, Loading } from "../components/common";

interface Trigger {
  path: string;
  script_path: string;
  is_flow: boolean;
  enabled: boolean;
  error?: string | null;
  [key: string]: unknown;
}

/** Each kind of trigger: its API base and what identifies a trigger's source. */
const KINDS: { id: string; title: string; source: (t: Trigger) => string }[] = [
  { id: "http_triggers", title: "HTTP routes", source: (t) => `${String(t.http_method).toUpperCase()} /api/r/${t.route_path}` },
  { id: "kafka_triggers", title: "Kafka", source: (t) => `${(t.topics as string[]).join(", ")} (${t.kafka_resource_path})` },
  { id: "websocket_triggers", title: "WebSocket", source: (t) => String(t.url) },
  { id: "email_triggers", title: "Email", source: (t) => String(t.address ?? t.local_part) },
];

function TriggerList({ kind }: { kind: (typeof KINDS)[number] }) {
  const triggers = useAsync(() => apiJson<Trigger[]>(ws(`/${kind.id}/list`)), [kind.id]);
  const [error, setError] = useState<Error | null>(null);
  const toggle = async (trigger: Trigger) => {
    setError(null);
    try {
      await apiText(ws(`/${kind.id}/setenabled/${trigger.path}`), { body: { enabled: !trigger.enabled } });
      triggers.reload();
    } catch (err) {
      setError(err as Error);
    }
  };
  return (
    <section data-kind={kind.id}>
      <h2>{kind.title}</h2>
      {triggers.loading && !triggers.data && <Loading />}
      <ErrorBox error={triggers.error ?? error} />
      {triggers.data && triggers.data.length === 0 && <Empty>No {kind.title} triggers.</Empty>}
      {triggers.data && triggers.data.length > 0 && (
        <table className="list">
          <thead>
            <tr>
              <th>Path</th>
              <th>Source</th>
              <th>Runs</th>
              <th>Enabled</th>
            </tr>
          </thead>
          <tbody>
            {triggers.data.map((t) => (
              <tr key={t.path} data-trigger={t.path}>
                <td>{t.path}</td>
                <td className="mono">{kind.source(t)}</td>
                <td>
                  <Link to={t.is_flow ? `/flows/get/${t.script_path}` : `/scripts/get/${t.script_path}`}>{t.script_path}</Link>
                </td>
                <td>
                  <label className="toggle">
                    <input type="checkbox" role="switch" checked={t.enabled} onChange={() => toggle(t)} aria-label={`enable ${t.path}`} />
                    <span className="slider" />
                  </label>
                  {t.error && <span className="field-error">{t.error}</span>}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

export function TriggersPage() {
  return (
    <div className="page">
      <h1>Triggers</h1>
      <p className="hint">
        Created through the API (see <a href="/api/openapi">/api/openapi</a>); enabled and disabled here.
      </p>
      {KINDS.map((kind) => (
        <TriggerList key={kind.id} kind={kind} />
      ))}
    </div>
  );
}
