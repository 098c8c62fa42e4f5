// The trigger forms' state, to and from the API's shapes (``/<kind>/create|update``
// bodies, ``/<kind>/list`` items), and where an API error's ``location`` is shown.
// Pure, so it is tested without a browser.

export type TriggerKind = "http_triggers" | "kafka_triggers" | "websocket_triggers" | "email_triggers";

/** What every trigger runs. */
interface Target {
  path: string;
  script_path: string;
  is_flow: boolean;
}

export interface HttpForm extends Target {
  kind: "http_triggers";
  route_path: string;
  http_method: string;
  request_type: "sync" | "async";
  authentication_method: "none" | "windmill" | "signature";
  /** Empty on edit: the stored secret is kept. */
  signature_secret: string;
  has_signature_secret: boolean;
  workspaced_route: boolean;
  wrap_body: boolean;
  raw_string: boolean;
}

export interface KafkaForm extends Target {
  kind: "kafka_triggers";
  kafka_resource_path: string;
  /** One entry per topic (errors name ``topics[i]``). */
  topics: string[];
  /** Empty: the server's default (``gristmill-<workspace>-<path>``). */
  group_id: string;
  auto_offset_reset: "latest" | "earliest";
}

export interface FilterEntry {
  key: string;
  /** JSON; text that is not JSON is taken as a string. */
  value: string;
}

export type InitialMessageEntry =
  | { type: "raw"; raw_message: string }
  | { type: "runnable"; path: string; is_flow: boolean; /** a JSON object */ args: string };

export interface WebsocketForm extends Target {
  kind: "websocket_triggers";
  url: string;
  filters: FilterEntry[];
  filter_logic: "and" | "or";
  initial_messages: InitialMessageEntry[];
  can_return_message: boolean;
  can_return_error_result: boolean;
}

export interface EmailForm extends Target {
  kind: "email_triggers";
  local_part: string;
  workspaced_local_part: boolean;
}

export type TriggerForm = HttpForm | KafkaForm | WebsocketForm | EmailForm;

export const HTTP_METHODS = ["get", "post", "put", "delete", "patch"] as const;

/** A trigger as ``/<kind>/list`` answers it (the fields the forms read). */
export type TriggerItem = Record<string, unknown> & { path: string; script_path: string; is_flow: boolean };

export function emptyForm(kind: TriggerKind, script_path = ""): TriggerForm {
  const target = { path: "", script_path, is_flow: false };
  switch (kind) {
    case "http_triggers":
      return {
        kind,
        ...target,
        route_path: "",
        http_method: "post",
        request_type: "sync",
        authentication_method: "none",
        signature_secret: "",
        has_signature_secret: false,
        workspaced_route: true,
        wrap_body: false,
        raw_string: false,
      };
    case "kafka_triggers":
      return { kind, ...target, kafka_resource_path: "", topics: [""], group_id: "", auto_offset_reset: "latest" };
    case "websocket_triggers":
      return {
        kind,
        ...target,
        url: "",
        filters: [],
        filter_logic: "and",
        initial_messages: [],
        can_return_message: false,
        can_return_error_result: false,
      };
    case "email_triggers":
      return { kind, ...target, local_part: "", workspaced_local_part: false };
  }
}

const text = (value: unknown): string => (typeof value === "string" ? value : "");
const json = (value: unknown): string => JSON.stringify(value ?? null);

/** The form editing ``item`` (a trigger of ``kind`` as listed). */
export function formFromTrigger(kind: TriggerKind, item: TriggerItem): TriggerForm {
  const target = { path: item.path, script_path: item.script_path, is_flow: Boolean(item.is_flow) };
  switch (kind) {
    case "http_triggers":
      return {
        kind,
        ...target,
        route_path: text(item.route_path),
        http_method: text(item.http_method) || "post",
        request_type: item.request_type === "async" || item.is_async === true ? "async" : "sync",
        authentication_method: (text(item.authentication_method) || "none") as HttpForm["authentication_method"],
        signature_secret: "",
        has_signature_secret: Boolean(item.has_signature_secret),
        workspaced_route: Boolean(item.workspaced_route),
        wrap_body: Boolean(item.wrap_body),
        raw_string: Boolean(item.raw_string),
      };
    case "kafka_triggers": {
      const topics = Array.isArray(item.topics) ? item.topics.map(String) : [];
      return {
        kind,
        ...target,
        kafka_resource_path: text(item.kafka_resource_path),
        topics: topics.length > 0 ? topics : [""],
        group_id: text(item.group_id),
        auto_offset_reset: item.auto_offset_reset === "earliest" ? "earliest" : "latest",
      };
    }
    case "websocket_triggers": {
      const filters = Array.isArray(item.filters) ? (item.filters as { key: string; value: unknown }[]) : [];
      const messages = Array.isArray(item.initial_messages)
        ? (item.initial_messages as { raw_message?: string; runnable_result?: { path: string; args?: unknown; is_flow?: boolean } }[])
        : [];
      return {
        kind,
        ...target,
        url: text(item.url),
        filters: filters.map((f) => ({ key: f.key, value: json(f.value) })),
        filter_logic: item.filter_logic === "or" ? "or" : "and",
        initial_messages: messages.map((m): InitialMessageEntry =>
          m.runnable_result
            ? {
                type: "runnable",
                path: m.runnable_result.path,
                is_flow: Boolean(m.runnable_result.is_flow),
                args: JSON.stringify(m.runnable_result.args ?? {}),
              }
            : { type: "raw", raw_message: m.raw_message ?? "" },
        ),
        can_return_message: Boolean(item.can_return_message),
        can_return_error_result: Boolean(item.can_return_error_result),
      };
    }
    case "email_triggers":
      return { kind, ...target, local_part: text(item.local_part), workspaced_local_part: Boolean(item.workspaced_local_part) };
  }
}

/** A problem found before sending, shaped like the API's errors. */
export interface LocalError {
  message: string;
  location: string;
}

export type BodyOrError = { body: Record<string, unknown> } | { error: LocalError };

function filterValue(textValue: string): unknown {
  try {
    return JSON.parse(textValue);
  } catch {
    return textValue;
  }
}

/**
 * The JSON body of ``/<kind>/create`` (``editing`` false: with ``path``) or of
 * ``/<kind>/update/<path>``. Only what the page itself must parse (JSON arguments) is
 * checked here; everything else is the server's to judge.
 */
export function bodyOf(form: TriggerForm, editing: boolean): BodyOrError {
  const body: Record<string, unknown> = { script_path: form.script_path.trim(), is_flow: form.is_flow };
  if (!editing) body.path = form.path.trim();
  switch (form.kind) {
    case "http_triggers":
      Object.assign(body, {
        route_path: form.route_path.trim(),
        http_method: form.http_method,
        request_type: form.request_type,
        authentication_method: form.authentication_method,
        workspaced_route: form.workspaced_route,
        wrap_body: form.wrap_body,
        raw_string: form.raw_string,
      });
      // An update without a secret keeps the stored one.
      if (form.authentication_method === "signature" && form.signature_secret) {
        body.signature_secret = form.signature_secret;
      }
      return { body };
    case "kafka_triggers":
      Object.assign(body, {
        kafka_resource_path: form.kafka_resource_path.trim(),
        topics: form.topics.map((t) => t.trim()),
        group_id: form.group_id.trim() || null,
        auto_offset_reset: form.auto_offset_reset,
      });
      return { body };
    case "websocket_triggers": {
      const messages: Record<string, unknown>[] = [];
      for (const [index, message] of form.initial_messages.entries()) {
        if (message.type === "raw") {
          messages.push({ raw_message: message.raw_message });
          continue;
        }
        const location = `initial_messages[${index}].runnable_result.args`;
        let args: unknown;
        try {
          args = JSON.parse(message.args.trim() || "{}");
        } catch (err) {
          return { error: { message: `invalid JSON: ${(err as Error).message}`, location } };
        }
        if (typeof args !== "object" || args === null || Array.isArray(args)) {
          return { error: { message: "the arguments must be a JSON object", location } };
        }
        messages.push({ runnable_result: { path: message.path.trim(), args, is_flow: message.is_flow } });
      }
      Object.assign(body, {
        url: form.url.trim(),
        filters: form.filters.map((f) => ({ key: f.key.trim(), value: filterValue(f.value) })),
        filter_logic: form.filter_logic,
        initial_messages: messages,
        can_return_message: form.can_return_message,
        can_return_error_result: form.can_return_error_result,
      });
      return { body };
    }
    case "email_triggers":
      Object.assign(body, { local_part: form.local_part.trim(), workspaced_local_part: form.workspaced_local_part });
      return { body };
  }
}

/**
 * The field of ``fields`` an error at ``location`` is shown next to: the longest one
 * that is the location or contains it (``topics[1]`` for ``topics[1]``,
 * ``filters[0]`` for ``filters[0].key``); ``null`` when none does (shown apart).
 */
export function fieldOf(location: string | null | undefined, fields: readonly string[]): string | null {
  if (!location) return null;
  let best: string | null = null;
  for (const field of fields) {
    const inside = location === field || location.startsWith(`${field}.`) || location.startsWith(`${field}[`);
    if (inside && (best === null || field.length > best.length)) best = field;
  }
  return best;
}

/** Every place an error of ``form`` can be shown (its fields, and each list entry). */
export function fieldsOf(form: TriggerForm): string[] {
  const common = ["path", "script_path", "is_flow"];
  switch (form.kind) {
    case "http_triggers":
      return [
        ...common,
        "route_path",
        "http_method",
        "request_type",
        "authentication_method",
        "signature_secret",
        "workspaced_route",
        "wrap_body",
        "raw_string",
      ];
    case "kafka_triggers":
      return [
        ...common,
        "kafka_resource_path",
        "topics",
        ...form.topics.map((_, i) => `topics[${i}]`),
        "group_id",
        "auto_offset_reset",
      ];
    case "websocket_triggers":
      return [
        ...common,
        "url",
        "filters",
        ...form.filters.map((_, i) => `filters[${i}]`),
        "filter_logic",
        "initial_messages",
        ...form.initial_messages.map((_, i) => `initial_messages[${i}]`),
        "can_return_message",
        "can_return_error_result",
      ];
    case "email_triggers":
      return [...common, "local_part", "workspaced_local_part"];
  }
}

/** Where an HTTP route is served (relative to the server). */
export function routeUrl(workspace: string, route: string, workspaced: boolean): string {
  const clean = route.trim().replace(/^\/+|\/+$/g, "");
  return workspaced ? `/api/r/${workspace}/${clean}` : `/api/r/${clean}`;
}

/** How a trigger's connection is doing: ``error`` wins; ``null`` for kinds with none. */
export function connectionOf(kind: TriggerKind, item: TriggerItem): { state: "error" | "connected" | "pending" | "disabled"; text: string } | null {
  if (kind !== "kafka_triggers" && kind !== "websocket_triggers") return null;
  if (!item.enabled) return { state: "disabled", text: "disabled" };
  if (typeof item.error === "string" && item.error) return { state: "error", text: item.error };
  if (typeof item.server_id === "string" && item.server_id) {
    return { state: "connected", text: `${kind === "kafka_triggers" ? "consuming" : "connected"} on ${item.server_id}` };
  }
  return { state: "pending", text: "waiting for a triggers server" };
}
