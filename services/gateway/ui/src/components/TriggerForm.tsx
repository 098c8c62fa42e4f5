import { useId, useState, type ReactNode } from "react";
import { ApiError, apiJson, apiText, workspace, ws } from "../lib/api";
import {
  bodyOf,
  fieldOf,
  fieldsOf,
  HTTP_METHODS,
  routeUrl,
  type EmailForm,
  type HttpForm,
  type InitialMessageEntry,
  type KafkaForm,
  type LocalError,
  type TriggerForm as TriggerFormState,
  type WebsocketForm,
} from "../lib/triggerForms";
import { useAsync } from "../lib/useAsync";
import { ErrorBox, onCtrlEnter } from "./common";

type ShownError = ApiError | LocalError;

/** The error placed at ``field``, if any (``data-field`` names it for tests and styles). */
function FieldError({ error, at, field }: { error: ShownError | null; at: string | null; field: string }) {
  if (!error || at !== field) return null;
  return (
    <span className="field-error" role="alert" data-field={field}>
      {error.message}
    </span>
  );
}

function Check({ label, checked, onChange, name }: { label: ReactNode; checked: boolean; onChange: (v: boolean) => void; name: string }) {
  return (
    <label className="inline">
      <input type="checkbox" name={name} checked={checked} onChange={(e) => onChange(e.target.checked)} /> {label}
    </label>
  );
}

/** Paths of the workspace's scripts or flows, offered while typing a target. */
function useRunnables(isFlow: boolean) {
  return useAsync(
    () =>
      apiJson<{ path: string }[]>(ws(isFlow ? "/flows/list" : "/scripts/list"), { query: { per_page: 1000 } }).then((items) =>
        items.map((item) => item.path),
      ),
    [isFlow],
  );
}

function useKafkaResources(enabled: boolean) {
  return useAsync(
    () =>
      enabled
        ? apiJson<{ path: string }[]>(ws("/resources/list"), { query: { resource_type: "kafka" } }).then((items) =>
            items.map((item) => item.path),
          )
        : Promise.resolve([] as string[]),
    [enabled],
  );
}

export interface TriggerFormProps {
  initial: TriggerFormState;
  /** The trigger's path when editing (``update``), ``null`` when creating. */
  editing: string | null;
  title: string;
  onSaved: (path: string) => void;
  onCancel: () => void;
}

/** Create or edit one trigger; the API's errors are shown next to the field they name. */
export function TriggerForm({ initial, editing, title, onSaved, onCancel }: TriggerFormProps) {
  const [form, setForm] = useState<TriggerFormState>(initial);
  const [error, setError] = useState<ShownError | null>(null);
  const [busy, setBusy] = useState(false);
  const ids = useId();
  const runnables = useRunnables(form.is_flow);
  const kafkaResources = useKafkaResources(form.kind === "kafka_triggers");
  const at = fieldOf(error?.location, fieldsOf(form));

  // Each kind's fields are edited through this one setter (the kind never changes).
  const update = <F extends TriggerFormState>(changes: Partial<F>) => setForm((previous) => ({ ...previous, ...changes }) as TriggerFormState);

  const save = async () => {
    const built = bodyOf(form, editing !== null);
    if ("error" in built) {
      setError(built.error);
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const url = editing === null ? ws(`/${form.kind}/create`) : ws(`/${form.kind}/update/${editing}`);
      const answer = await apiText(url, { body: built.body });
      onSaved(answer.trim() || form.path);
    } catch (err) {
      setError(err instanceof ApiError ? err : new ApiError(0, String(err)));
    } finally {
      setBusy(false);
    }
  };

  const listId = `${ids}-runnables`;
  return (
    <form
      className="card trigger-form"
      data-kind={form.kind}
      onKeyDown={onCtrlEnter(save)}
      onSubmit={(e) => {
        e.preventDefault();
        void save();
      }}
    >
      <h3>{title}</h3>
      <label>
        Path
        <input
          name="path"
          value={form.path}
          onChange={(e) => update({ path: e.target.value })}
          placeholder="u/admin/my_trigger"
          readOnly={editing !== null}
          required
        />
        <FieldError error={error} at={at} field="path" />
      </label>
      {form.kind === "http_triggers" && <HttpFields form={form} update={update} error={error} at={at} />}
      {form.kind === "kafka_triggers" && (
        <KafkaFields form={form} update={update} error={error} at={at} resources={kafkaResources.data ?? []} listId={`${ids}-kafka`} />
      )}
      {form.kind === "websocket_triggers" && <WebsocketFields form={form} update={update} error={error} at={at} />}
      {form.kind === "email_triggers" && <EmailFields form={form} update={update} error={error} at={at} />}
      <div className="row">
        <label>
          Runs
          <select name="is_flow" value={form.is_flow ? "flow" : "script"} onChange={(e) => update({ is_flow: e.target.value === "flow" })}>
            <option value="script">a script</option>
            <option value="flow">a flow</option>
          </select>
        </label>
        <label className="grow">
          {form.is_flow ? "Flow path" : "Script path"}
          <input
            name="script_path"
            list={listId}
            value={form.script_path}
            onChange={(e) => update({ script_path: e.target.value })}
            placeholder={form.is_flow ? "f/team/my_flow" : "u/admin/my_script"}
            required
          />
          <datalist id={listId}>
            {(runnables.data ?? []).map((path) => (
              <option key={path} value={path} />
            ))}
          </datalist>
          <FieldError error={error} at={at} field="script_path" />
        </label>
      </div>
      {error && at === null && <ErrorBox error={error as Error} />}
      <div className="actions">
        <button className="primary" type="submit" disabled={busy} title="Ctrl+Enter">
          {editing === null ? "Create" : "Save"}
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

interface FieldsProps<F> {
  form: F;
  update: (changes: Partial<F>) => void;
  error: ShownError | null;
  at: string | null;
}

function HttpFields({ form, update, error, at }: FieldsProps<HttpForm>) {
  return (
    <>
      <div className="row">
        <label>
          Method
          <select name="http_method" value={form.http_method} onChange={(e) => update({ http_method: e.target.value })}>
            {HTTP_METHODS.map((m) => (
              <option key={m} value={m}>
                {m.toUpperCase()}
              </option>
            ))}
          </select>
          <FieldError error={error} at={at} field="http_method" />
        </label>
        <label className="grow">
          <span>
            Route (<code>:name</code> or <code>{"{name}"}</code> for parameters)
          </span>
          <input name="route_path" value={form.route_path} onChange={(e) => update({ route_path: e.target.value })} placeholder="orders/:id" required />
          <FieldError error={error} at={at} field="route_path" />
        </label>
      </div>
      <Check
        name="workspaced_route"
        checked={form.workspaced_route}
        onChange={(v) => update({ workspaced_route: v })}
        label={<>served under the workspace (otherwise instance-wide, admins only)</>}
      />
      <FieldError error={error} at={at} field="workspaced_route" />
      <p className="hint">
        Served at{" "}
        <code className="route-url">
          {form.http_method.toUpperCase()} {routeUrl(workspace(), form.route_path || "…", form.workspaced_route)}
        </code>
      </p>
      <div className="row">
        <label>
          Answer
          <select name="request_type" value={form.request_type} onChange={(e) => update({ request_type: e.target.value as HttpForm["request_type"] })}>
            <option value="sync">sync: the result</option>
            <option value="async">async: the job id</option>
          </select>
          <FieldError error={error} at={at} field="request_type" />
        </label>
        <label>
          Authentication
          <select
            name="authentication_method"
            value={form.authentication_method}
            onChange={(e) => update({ authentication_method: e.target.value as HttpForm["authentication_method"] })}
          >
            <option value="none">none</option>
            <option value="windmill">a token of the workspace</option>
            <option value="signature">an HMAC signature (X-Signature)</option>
          </select>
          <FieldError error={error} at={at} field="authentication_method" />
        </label>
      </div>
      {form.authentication_method === "signature" && (
        <label>
          Signature secret
          <input
            name="signature_secret"
            type="password"
            autoComplete="new-password"
            value={form.signature_secret}
            onChange={(e) => update({ signature_secret: e.target.value })}
            placeholder={form.has_signature_secret ? "kept unless you type a new one" : "the HMAC-SHA256 key"}
          />
          <FieldError error={error} at={at} field="signature_secret" />
        </label>
      )}
      <Check name="wrap_body" checked={form.wrap_body} onChange={(v) => update({ wrap_body: v })} label={<>pass the body whole as <code>body</code></>} />
      <Check name="raw_string" checked={form.raw_string} onChange={(v) => update({ raw_string: v })} label={<>also pass the unparsed body as <code>raw_string</code></>} />
    </>
  );
}

function KafkaFields({ form, update, error, at, resources, listId }: FieldsProps<KafkaForm> & { resources: string[]; listId: string }) {
  const setTopic = (index: number, value: string) => update({ topics: form.topics.map((t, i) => (i === index ? value : t)) });
  return (
    <>
      <label>
        Kafka resource (a resource of type kafka)
        <input
          name="kafka_resource_path"
          list={listId}
          value={form.kafka_resource_path}
          onChange={(e) => update({ kafka_resource_path: e.target.value })}
          placeholder="u/admin/kafka"
          required
        />
        <datalist id={listId}>
          {resources.map((path) => (
            <option key={path} value={path} />
          ))}
        </datalist>
        <FieldError error={error} at={at} field="kafka_resource_path" />
      </label>
      <fieldset className="entries" data-field="topics">
        <legend>Topics</legend>
        {form.topics.map((topic, index) => (
          <div className="entry" key={index}>
            <input name={`topics[${index}]`} aria-label={`topic ${index + 1}`} value={topic} onChange={(e) => setTopic(index, e.target.value)} />
            <button type="button" className="link" disabled={form.topics.length === 1} onClick={() => update({ topics: form.topics.filter((_, i) => i !== index) })}>
              remove
            </button>
            <FieldError error={error} at={at} field={`topics[${index}]`} />
          </div>
        ))}
        <button type="button" onClick={() => update({ topics: [...form.topics, ""] })}>
          Add a topic
        </button>
        <FieldError error={error} at={at} field="topics" />
      </fieldset>
      <div className="row">
        <label className="grow">
          Consumer group (empty: one for this trigger)
          <input name="group_id" value={form.group_id} onChange={(e) => update({ group_id: e.target.value })} />
          <FieldError error={error} at={at} field="group_id" />
        </label>
        <label>
          A new group starts at
          <select
            name="auto_offset_reset"
            value={form.auto_offset_reset}
            onChange={(e) => update({ auto_offset_reset: e.target.value as KafkaForm["auto_offset_reset"] })}
          >
            <option value="latest">the latest message</option>
            <option value="earliest">the earliest message</option>
          </select>
          <FieldError error={error} at={at} field="auto_offset_reset" />
        </label>
      </div>
    </>
  );
}

function MessageEntry({
  message,
  index,
  set,
}: {
  message: InitialMessageEntry;
  index: number;
  set: (message: InitialMessageEntry) => void;
}) {
  return (
    <>
      <select
        aria-label={`message ${index + 1} kind`}
        value={message.type}
        onChange={(e) =>
          set(e.target.value === "raw" ? { type: "raw", raw_message: "" } : { type: "runnable", path: "", is_flow: false, args: "{}" })
        }
      >
        <option value="raw">text</option>
        <option value="runnable">a script's result</option>
      </select>
      {message.type === "raw" ? (
        <input
          name={`initial_messages[${index}].raw_message`}
          aria-label={`message ${index + 1}`}
          value={message.raw_message}
          onChange={(e) => set({ ...message, raw_message: e.target.value })}
        />
      ) : (
        <>
          <input
            name={`initial_messages[${index}].runnable_result.path`}
            aria-label={`message ${index + 1} script`}
            placeholder="u/admin/hello"
            value={message.path}
            onChange={(e) => set({ ...message, path: e.target.value })}
          />
          <label className="inline">
            <input type="checkbox" checked={message.is_flow} onChange={(e) => set({ ...message, is_flow: e.target.checked })} /> flow
          </label>
          <input
            name={`initial_messages[${index}].runnable_result.args`}
            aria-label={`message ${index + 1} arguments`}
            className="mono"
            value={message.args}
            onChange={(e) => set({ ...message, args: e.target.value })}
          />
        </>
      )}
    </>
  );
}

function WebsocketFields({ form, update, error, at }: FieldsProps<WebsocketForm>) {
  const setFilter = (index: number, changes: Partial<WebsocketForm["filters"][number]>) =>
    update({ filters: form.filters.map((f, i) => (i === index ? { ...f, ...changes } : f)) });
  const setMessage = (index: number, message: InitialMessageEntry) =>
    update({ initial_messages: form.initial_messages.map((m, i) => (i === index ? message : m)) });
  return (
    <>
      <label>
        <span>
          URL (<code>ws://</code>, <code>wss://</code>, or <code>$script:&lt;path&gt;</code> / <code>$flow:&lt;path&gt;</code> answering one)
        </span>
        <input name="url" value={form.url} onChange={(e) => update({ url: e.target.value })} placeholder="wss://example.org/feed" required />
        <FieldError error={error} at={at} field="url" />
      </label>
      <fieldset className="entries" data-field="filters">
        <legend>Filters (a message runs only if it is a JSON object whose field contains the value)</legend>
        {form.filters.map((filter, index) => (
          <div className="entry" key={index}>
            <input name={`filters[${index}].key`} aria-label={`filter ${index + 1} key`} placeholder="key" value={filter.key} onChange={(e) => setFilter(index, { key: e.target.value })} />
            <input
              name={`filters[${index}].value`}
              aria-label={`filter ${index + 1} value`}
              className="mono"
              placeholder='value (JSON, e.g. "trade")'
              value={filter.value}
              onChange={(e) => setFilter(index, { value: e.target.value })}
            />
            <button type="button" className="link" onClick={() => update({ filters: form.filters.filter((_, i) => i !== index) })}>
              remove
            </button>
            <FieldError error={error} at={at} field={`filters[${index}]`} />
          </div>
        ))}
        <div className="actions">
          <button type="button" onClick={() => update({ filters: [...form.filters, { key: "", value: '""' }] })}>
            Add a filter
          </button>
          {form.filters.length > 1 && (
            <select name="filter_logic" aria-label="filter logic" value={form.filter_logic} onChange={(e) => update({ filter_logic: e.target.value as WebsocketForm["filter_logic"] })}>
              <option value="and">every filter matches</option>
              <option value="or">any filter matches</option>
            </select>
          )}
        </div>
        <FieldError error={error} at={at} field="filters" />
        <FieldError error={error} at={at} field="filter_logic" />
      </fieldset>
      <fieldset className="entries" data-field="initial_messages">
        <legend>Initial messages (sent in order after connecting)</legend>
        {form.initial_messages.map((message, index) => (
          <div className="entry" key={index}>
            <MessageEntry message={message} index={index} set={(m) => setMessage(index, m)} />
            <button type="button" className="link" onClick={() => update({ initial_messages: form.initial_messages.filter((_, i) => i !== index) })}>
              remove
            </button>
            <FieldError error={error} at={at} field={`initial_messages[${index}]`} />
          </div>
        ))}
        <button type="button" onClick={() => update({ initial_messages: [...form.initial_messages, { type: "raw", raw_message: "" }] })}>
          Add a message
        </button>
        <FieldError error={error} at={at} field="initial_messages" />
      </fieldset>
      <Check
        name="can_return_message"
        checked={form.can_return_message}
        onChange={(v) => update({ can_return_message: v })}
        label="send each run's result back on the socket"
      />
      <Check
        name="can_return_error_result"
        checked={form.can_return_error_result}
        onChange={(v) => update({ can_return_error_result: v })}
        label="and a failed run's error"
      />
    </>
  );
}

function EmailFields({ form, update, error, at }: FieldsProps<EmailForm>) {
  return (
    <>
      <label>
        Local part (the address before the @)
        <input name="local_part" value={form.local_part} onChange={(e) => update({ local_part: e.target.value })} placeholder="invoices" required />
        <FieldError error={error} at={at} field="local_part" />
      </label>
      <Check
        name="workspaced_local_part"
        checked={form.workspaced_local_part}
        onChange={(v) => update({ workspaced_local_part: v })}
        label={
          <>
            prefix it with the workspace (<code>{workspace()}-{form.local_part || "…"}</code>)
          </>
        }
      />
    </>
  );
}
