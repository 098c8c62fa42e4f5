// Gristmill input schemas (read from a script's signature or written for a flow) to
// what the form library renders: a plain JSON Schema its validator accepts, and a
// uiSchema choosing each field's control.
//
// Gristmill's schemas carry a few things plain JSON Schema validators do not know:
// ``order`` (parameter order), ``nullable`` (optional parameters), ``$schema`` of
// draft 2020-12, and formats like ``resource-postgresql``. They become ui options here.

import type { RJSFSchema, UiSchema } from "@rjsf/utils";
import type { JsonSchema } from "./types";

/** The control a field gets; tests and the form both read it. */
export type ControlKind =
  | "number"
  | "integer"
  | "select"
  | "multiselect"
  | "toggle"
  | "text"
  | "textarea"
  | "date"
  | "datetime"
  | "email"
  | "password"
  | "resource"
  | "json"
  | "object"
  | "array";

export const RESOURCE_PREFIX = "resource-";
/** Formats the validator checks; other formats are hints for the form only. */
const CHECKED_FORMATS = new Set(["date", "date-time", "time", "email", "uri", "uuid", "ipv4", "ipv6", "hostname"]);

export interface MappedForm {
  schema: RJSFSchema;
  uiSchema: UiSchema;
}

function typeOf(schema: JsonSchema): string | undefined {
  const type = schema.type;
  if (Array.isArray(type)) return type.find((t) => t !== "null");
  return type;
}

/** A resource type name from ``format: "resource-<type>"``, or ``undefined``. */
export function resourceType(schema: JsonSchema): string | undefined {
  const format = schema.format;
  if (typeof format === "string" && format.startsWith(RESOURCE_PREFIX)) {
    return format.slice(RESOURCE_PREFIX.length);
  }
  return undefined;
}

/** The control a property of this schema is edited with. */
export function controlKind(schema: JsonSchema): ControlKind {
  if (resourceType(schema)) return "resource";
  const type = typeOf(schema);
  if (Array.isArray(schema.enum) && schema.enum.length > 0) return "select";
  switch (type) {
    case "integer":
      return "integer";
    case "number":
      return "number";
    case "boolean":
      return "toggle";
    case "string":
      if (schema.format === "date") return "date";
      if (schema.format === "date-time") return "datetime";
      if (schema.format === "email") return "email";
      if (schema.format === "password" || schema.password === true) return "password";
      if (schema.format === "multiline" || schema.contentEncoding === "base64") return "textarea";
      return "text";
    case "array":
      if (schema.items && Array.isArray(schema.items.enum)) return "multiselect";
      return "array";
    case "object":
      return schema.properties && Object.keys(schema.properties).length > 0 ? "object" : "json";
    default:
      // No type (``Any``): any JSON value.
      return "json";
  }
}

function orderOf(schema: JsonSchema): string[] {
  const names = Object.keys(schema.properties ?? {});
  const order = (schema.order ?? []).filter((name) => names.includes(name));
  return [...order, ...names.filter((name) => !order.includes(name))];
}

function mapProperty(name: string | undefined, source: JsonSchema): MappedForm {
  const kind = controlKind(source);
  const schema: Record<string, unknown> = {};
  const ui: UiSchema = {};
  for (const [key, value] of Object.entries(source)) {
    if (["$schema", "order", "nullable", "properties", "items", "required", "format", "password"].includes(key)) {
      continue;
    }
    schema[key] = value;
  }
  if (name !== undefined && schema.title === undefined) schema.title = name;
  if (typeof source.format === "string" && CHECKED_FORMATS.has(source.format)) {
    schema.format = source.format;
  }
  switch (kind) {
    case "resource": {
      // A reference ``$res:<path>`` to a saved resource of the type.
      schema.type = "string";
      delete schema.default;
      if (typeof source.default === "string") schema.default = source.default;
      ui["ui:widget"] = "resource";
      ui["ui:options"] = { resourceType: resourceType(source) };
      break;
    }
    case "json": {
      // Free-form: edited as JSON text; any value of the declared type.
      delete schema.type;
      if (typeOf(source) === "object") schema.type = "object";
      ui["ui:field"] = "json";
      ui["ui:options"] = { label: false };
      break;
    }
    case "object": {
      const nested = mapObject(source);
      Object.assign(schema, nested.schema);
      Object.assign(ui, nested.uiSchema);
      break;
    }
    case "array":
    case "multiselect": {
      const items = mapProperty(undefined, source.items ?? {});
      schema.type = "array";
      schema.items = items.schema;
      if (kind === "multiselect") {
        schema.uniqueItems = true;
        ui["ui:widget"] = "checkboxes";
      } else if (Object.keys(items.uiSchema).length > 0) {
        ui.items = items.uiSchema;
      }
      break;
    }
    case "integer":
    case "number":
      ui["ui:widget"] = "updown";
      break;
    case "select":
      ui["ui:widget"] = "select";
      break;
    case "toggle":
      ui["ui:widget"] = "toggle";
      break;
    case "textarea":
      ui["ui:widget"] = "textarea";
      break;
    case "password":
      ui["ui:widget"] = "password";
      break;
    case "date":
      ui["ui:widget"] = "date";
      break;
    case "datetime":
      ui["ui:widget"] = "datetime";
      break;
    case "email":
      ui["ui:widget"] = "email";
      break;
    case "text":
      break;
  }
  ui["ui:options"] = { ...(ui["ui:options"] as object | undefined), kind };
  return { schema: schema as RJSFSchema, uiSchema: ui };
}

function mapObject(source: JsonSchema): MappedForm {
  const properties: Record<string, RJSFSchema> = {};
  const uiSchema: UiSchema = {};
  const order = orderOf(source);
  for (const name of order) {
    const mapped = mapProperty(name, source.properties![name]!);
    properties[name] = mapped.schema;
    uiSchema[name] = mapped.uiSchema;
  }
  uiSchema["ui:order"] = [...order, "*"];
  const schema: RJSFSchema = { type: "object", properties };
  const required = (source.required ?? []).filter((name) => name in properties);
  if (required.length > 0) schema.required = required;
  return { schema, uiSchema };
}

/** The form of a script's or flow's input schema (``null``: no inputs). */
export function mapInputSchema(source: JsonSchema | null | undefined): MappedForm {
  const base: JsonSchema = source && typeof source === "object" ? source : {};
  const mapped = mapObject({ ...base, properties: base.properties ?? {} });
  if (typeof base.description === "string") mapped.schema.description = base.description;
  return mapped;
}

/** Each top-level input's name and control, in order: what the form shows. */
export function inputControls(source: JsonSchema | null | undefined): { name: string; kind: ControlKind }[] {
  const base = source ?? {};
  return orderOf({ ...base, properties: base.properties ?? {} }).map((name) => ({
    name,
    kind: controlKind(base.properties![name]!),
  }));
}

/** The values a form starts with: each input's default (objects copied). */
export function initialValues(source: JsonSchema | null | undefined): Record<string, unknown> {
  const values: Record<string, unknown> = {};
  for (const [name, property] of Object.entries(source?.properties ?? {})) {
    if (property.default !== undefined && !resourceType(property)) {
      values[name] = structuredClone(property.default);
    }
  }
  return values;
}
