import { useState } from "react";
import { Link, useSearchParams } from "react-router-dom";
import { apiJson, apiText, workspace, ws } from "../lib/api";
import { connectionOf, emptyForm, formFromTrigger, routeUrl, type TriggerItem, type TriggerKind } from "../lib/triggerForms";
import { useAsync } from "../lib/useAsync";
import { Empty, ErrorBox, formatTime, Loading } from "../components/common";
import { TriggerForm } from "../components/TriggerForm";

type Trigger = TriggerItem & { enabled: boolean; error?: string | null };

/** Each kind of trigger: its API base and what identifies a trigger's source. */
const KINDS: { id: TriggerKind; title: string; one: string; source: (t: Trigger) => string }[] = [
  {
    id: "http_triggers",
    title: "HTTP routes",
    one: "HTTP route",
    source: (t) => `${String(t.http_method).toUpperCase()} ${routeUrl(workspace(), String(t.route_path), Boolean(t.workspaced_route))}`,
  },
  {
    id: "kafka_triggers",
    title: "Kafka",
    one: "Kafka trigger",
    source: (t) => `${(t.topics as string[]).join(", ")} (${t.kafka_resource_path})`,
  },
  { id: "websocket_triggers", title: "WebSocket", one: "WebSocket trigger", source: (t) => String(t.url) },
  { id: "email_triggers", title: "Email", one: "email trigger", source: (t) => String(t.address ?? t.local_part) },
];

function Status({ kind, trigger }: { kind: TriggerKind; trigger: Trigger }) {
  const connection = connectionOf(kind, trigger);
  if (!connection) return <span className="hint">{trigger.enabled ? "active" : "disabled"}</span>;
  const ping = typeof trigger.last_server_ping === "string" ? trigger.last_server_ping : null;
  const since = typeof trigger.error_at === "string" ? trigger.error_at : null;
  return (
    <span className={`trigger-status status-${connection.state}`} data-state={connection.state}>
      {connection.text}
      {connection.state === "error" && since && <span className="hint"> (since {formatTime(since)})</span>}
      {connection.state === "connected" && ping && <span className="hint"> (last ping {formatTime(ping)})</span>}
    </span>
  );
}

function TriggerList({ kind, script, refresh }: { kind: (typeof KINDS)[number]; script: string; refresh: number }) {
  const triggers = useAsync(() => apiJson<Trigger[]>(ws(`/${kind.id}/list`)), [kind.id, refresh]);
  const [error, setError] = useState<Error | null>(null);
  /** ``""``: the new-trigger form; a path: that trigger's edit form; ``null``: none. */
  const [editing, setEditing] = useState<string | null>(null);
  const act = async (action: () => Promise<unknown>) => {
    setError(null);
    try {
      await action();
      triggers.reload();
    } catch (err) {
      setError(err as Error);
    }
  };
  const toggle = (trigger: Trigger) =>
    act(() => apiText(ws(`/${kind.id}/setenabled/${trigger.path}`), { body: { enabled: !trigger.enabled } }));
  const remove = (trigger: Trigger) => {
    if (!window.confirm(`Delete the ${kind.one} ${trigger.path}?`)) return;
    void act(() => apiText(ws(`/${kind.id}/delete/${trigger.path}`), { method: "DELETE" }));
  };
  const saved = () => {
    setEditing(null);
    triggers.reload();
  };
  const edited = triggers.data?.find((t) => t.path === editing);
  return (
    <section data-kind={kind.id}>
      <h2>
        {kind.title}{" "}
        <button className="small" onClick={() => setEditing("")} disabled={editing === ""}>
          New {kind.one}
        </button>
      </h2>
      {triggers.loading && !triggers.data && <Loading />}
      <ErrorBox error={triggers.error ?? error} />
      {triggers.data && triggers.data.length === 0 && editing !== "" && <Empty>No {kind.one}s yet.</Empty>}
      {triggers.data && triggers.data.length > 0 && (
        <table className="list">
          <thead>
            <tr>
              <th>Path</th>
              <th>Source</th>
              <th>Runs</th>
              <th>Status</th>
              <th>Enabled</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {triggers.data.map((t) => (
              <tr key={t.path} data-trigger={t.path}>
                <td>{t.path}</td>
                <td className="mono source">{kind.source(t)}</td>
                <td>
                  <Link to={t.is_flow ? `/flows/get/${t.script_path}` : `/scripts/get/${t.script_path}`}>{t.script_path}</Link>
                </td>
                <td>
                  <Status kind={kind.id} trigger={t} />
                </td>
                <td>
                  <label className="toggle">
                    <input type="checkbox" role="switch" checked={t.enabled} onChange={() => toggle(t)} aria-label={`enable ${t.path}`} />
                    <span className="slider" />
                  </label>
                </td>
                <td className="row-actions">
                  <button onClick={() => setEditing(t.path)} aria-label={`edit ${t.path}`}>
                    Edit
                  </button>
                  <button className="danger" onClick={() => remove(t)} aria-label={`delete ${t.path}`}>
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {editing === "" && (
        <TriggerForm
          key={`${kind.id}:new`}
          initial={emptyForm(kind.id, script)}
          editing={null}
          title={`New ${kind.one}`}
          onSaved={saved}
          onCancel={() => setEditing(null)}
        />
      )}
      {edited && (
        <TriggerForm
          key={`${kind.id}:${edited.path}`}
          initial={formFromTrigger(kind.id, edited)}
          editing={edited.path}
          title={`Edit ${edited.path}`}
          onSaved={saved}
          onCancel={() => setEditing(null)}
        />
      )}
    </section>
  );
}

export function TriggersPage() {
  const [params] = useSearchParams();
  const script = params.get("script") ?? "";
  const [refresh, setRefresh] = useState(0);
  return (
    <div className="page triggers-page">
      <h1>Triggers</h1>
      <div className="actions">
        <button onClick={() => setRefresh((n) => n + 1)} title="Read the triggers' states again">
          Refresh
        </button>
      </div>
      <p className="hint">
        Run a script or flow on an HTTP request, a Kafka message, a WebSocket message or an email (see also{" "}
        <a href="/api/openapi">/api/openapi</a>).
      </p>
      {KINDS.map((kind) => (
        <TriggerList key={kind.id} kind={kind} script={script} refresh={refresh} />
      ))}
    </div>
  );
}
