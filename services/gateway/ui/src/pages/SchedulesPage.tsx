import { useEffect, useState } from "react";
import { Link, useSearchParams } from "react-router-dom";
import { ApiError, apiJson, apiText, ws } from "../lib/api";
import type { Schedule } from "../lib/types";
import { useAsync } from "../lib/useAsync";
import { Empty, ErrorBox, formatTime, Loading, onCtrlEnter } from "../components/common";

const PREVIEW_DELAY_MS = 250;

function FieldError({ error, field }: { error: ApiError | null; field: string }) {
  if (!error || error.location !== field) return null;
  return (
    <span className="field-error" role="alert" data-field={field}>
      {error.message}
    </span>
  );
}

function NewSchedule({ onCreated, script }: { onCreated: () => void; script: string }) {
  const [path, setPath] = useState("");
  const [cron, setCron] = useState("0 */5 * * * *");
  const [timezone, setTimezone] = useState(() => Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC");
  const [target, setTarget] = useState(script);
  const [isFlow, setIsFlow] = useState(false);
  const [argsText, setArgsText] = useState("{}");
  const [preview, setPreview] = useState<string[] | null>(null);
  const [previewError, setPreviewError] = useState<ApiError | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    const timer = setTimeout(() => {
      apiJson<string[]>("/api/schedules/preview", { body: { schedule: cron, timezone } }).then(
        (instants) => {
          setPreview(instants);
          setPreviewError(null);
        },
        (err: ApiError) => {
          setPreview(null);
          setPreviewError(err);
        },
      );
    }, PREVIEW_DELAY_MS);
    return () => clearTimeout(timer);
  }, [cron, timezone]);

  let args: Record<string, unknown> | null = null;
  let argsError: string | null = null;
  try {
    const value = JSON.parse(argsText || "{}");
    if (typeof value === "object" && value !== null && !Array.isArray(value)) args = value;
    else argsError = "must be a JSON object";
  } catch (err) {
    argsError = `invalid JSON: ${(err as Error).message}`;
  }

  const create = async () => {
    if (args === null) return;
    setBusy(true);
    setError(null);
    try {
      await apiText(ws("/schedules/create"), {
        body: { path, schedule: cron, timezone, script_path: target, is_flow: isFlow, args, enabled: true },
      });
      setPath("");
      onCreated();
    } catch (err) {
      setError(err as ApiError);
    } finally {
      setBusy(false);
    }
  };

  const shownError = error ?? previewError;
  const located = shownError && ["schedule", "timezone", "path", "script_path"].includes(shownError.location ?? "");
  return (
    <form
      className="card new-schedule"
      onKeyDown={onCtrlEnter(create)}
      onSubmit={(e) => {
        e.preventDefault();
        void create();
      }}
    >
      <h2>New schedule</h2>
      <label>
        Path
        <input name="path" value={path} onChange={(e) => setPath(e.target.value)} placeholder="u/admin/every_5_minutes" required />
        <FieldError error={error} field="path" />
      </label>
      <label>
        Cron (seconds first, or 5 fields)
        <input name="schedule" value={cron} onChange={(e) => setCron(e.target.value)} required />
        <FieldError error={shownError} field="schedule" />
      </label>
      <label>
        Time zone
        <input name="timezone" value={timezone} onChange={(e) => setTimezone(e.target.value)} required />
        <FieldError error={shownError} field="timezone" />
      </label>
      <label>
        Script or flow path
        <input name="script_path" value={target} onChange={(e) => setTarget(e.target.value)} required />
        <FieldError error={error} field="script_path" />
      </label>
      <label className="inline">
        <input type="checkbox" name="is_flow" checked={isFlow} onChange={(e) => setIsFlow(e.target.checked)} /> it is a flow
      </label>
      <label>
        Arguments (JSON)
        <textarea name="args" rows={3} className="json-editor" value={argsText} onChange={(e) => setArgsText(e.target.value)} />
        {argsError && <span className="field-error">{argsError}</span>}
      </label>
      <div className="next-fires">
        <strong>Next fire times</strong>
        {preview && (
          <ol className="fire-times">
            {preview.map((instant) => (
              <li key={instant}>
                <time dateTime={instant}>{formatTime(instant)}</time>
              </li>
            ))}
          </ol>
        )}
        {!preview && !previewError && <p className="hint">…</p>}
      </div>
      {shownError && !located && <ErrorBox error={shownError} />}
      <button className="primary" type="submit" disabled={busy || args === null} title="Ctrl+Enter">
        Create schedule
      </button>
    </form>
  );
}

export function SchedulesPage() {
  const [params] = useSearchParams();
  const schedules = useAsync(() => apiJson<Schedule[]>(ws("/schedules/list"), { query: { per_page: 1000 } }), []);
  const [error, setError] = useState<Error | null>(null);
  const toggle = async (schedule: Schedule) => {
    setError(null);
    try {
      await apiText(ws(`/schedules/setenabled/${schedule.path}`), { body: { enabled: !schedule.enabled } });
      schedules.reload();
    } catch (err) {
      setError(err as Error);
    }
  };
  return (
    <div className="page">
      <h1>Schedules</h1>
      <ErrorBox error={error} />
      {schedules.loading && !schedules.data && <Loading />}
      <ErrorBox error={schedules.error} />
      {schedules.data && schedules.data.length === 0 && <Empty>No schedules yet: create one below.</Empty>}
      {schedules.data && schedules.data.length > 0 && (
        <table className="list schedules">
          <thead>
            <tr>
              <th>Path</th>
              <th>Cron</th>
              <th>Time zone</th>
              <th>Runs</th>
              <th>Next</th>
              <th>Last</th>
              <th>Enabled</th>
            </tr>
          </thead>
          <tbody>
            {schedules.data.map((s) => (
              <tr key={s.path} data-schedule={s.path}>
                <td>{s.path}</td>
                <td className="mono">{s.schedule}</td>
                <td>{s.timezone}</td>
                <td>
                  <Link to={s.is_flow ? `/flows/get/${s.script_path}` : `/scripts/get/${s.script_path}`}>{s.script_path}</Link>
                </td>
                <td>{formatTime(s.next_fire_at)}</td>
                <td>{formatTime(s.last_fired_at)}</td>
                <td>
                  <label className="toggle">
                    <input type="checkbox" role="switch" checked={s.enabled} onChange={() => toggle(s)} aria-label={`enable ${s.path}`} />
                    <span className="slider" />
                  </label>
                  {s.error && <span className="field-error">{s.error}</span>}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <NewSchedule onCreated={schedules.reload} script={params.get("script") ?? ""} />
    </div>
  );
}
