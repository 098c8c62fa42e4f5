// A form generated from a script's or flow's input schema (see lib/schemaForm.ts).

import Form from "@rjsf/core";
import type { FieldProps, RegistryFieldsType, RegistryWidgetsType, RJSFValidationError, WidgetProps } from "@rjsf/utils";
import validator from "@rjsf/validator-ajv8";
import { useEffect, useMemo, useRef, useState } from "react";
import { apiJson, ws } from "../lib/api";
import { mapInputSchema } from "../lib/schemaForm";
import type { JsonSchema } from "../lib/types";
import { onCtrlEnter } from "./common";

interface ResourceItem {
  path: string;
  description?: string;
}

/** A select of the saved resources of the field's type; the value is ``$res:<path>``. */
function ResourceWidget(props: WidgetProps) {
  const type = String(props.options.resourceType ?? "");
  const [items, setItems] = useState<ResourceItem[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    apiJson<ResourceItem[]>(ws("/resources/list"), { query: { resource_type: type } }).then(
      setItems,
      (err: Error) => setError(err.message),
    );
  }, [type]);
  const value = typeof props.value === "string" ? props.value : "";
  return (
    <div className="resource-picker">
      <select
        id={props.id}
        data-resource-type={type}
        value={value}
        required={props.required}
        disabled={props.disabled || props.readonly}
        onChange={(e) => props.onChange(e.target.value || undefined)}
        onBlur={() => props.onBlur(props.id, value)}
      >
        <option value="">{items === null ? "loading…" : `choose a ${type} resource`}</option>
        {(items ?? []).map((item) => (
          <option key={item.path} value={`$res:${item.path}`}>
            {item.path}
          </option>
        ))}
      </select>
      {items !== null && items.length === 0 && (
        <span className="hint">no {type} resource yet: create one under Resources</span>
      )}
      {error && <span className="hint error-text">{error}</span>}
    </div>
  );
}

/** A boolean as a switch. */
function ToggleWidget(props: WidgetProps) {
  return (
    <label className="toggle">
      <input
        id={props.id}
        type="checkbox"
        role="switch"
        checked={Boolean(props.value)}
        disabled={props.disabled || props.readonly}
        onChange={(e) => props.onChange(e.target.checked)}
      />
      <span className="slider" />
    </label>
  );
}

/** A free-form value edited as JSON text; invalid JSON is reported and not sent. */
function JsonField(props: FieldProps) {
  const format = (value: unknown) => (value === undefined ? "" : JSON.stringify(value, null, 2));
  const [text, setText] = useState(() => format(props.formData));
  const [problem, setProblem] = useState<string | null>(null);
  const last = useRef(props.formData);
  useEffect(() => {
    // Replaced from outside (reset, re-run with other args): show the new value.
    if (JSON.stringify(props.formData) !== JSON.stringify(last.current)) {
      last.current = props.formData;
      setText(format(props.formData));
      setProblem(null);
    }
  }, [props.formData]);
  const id = props.idSchema.$id;
  const title = props.schema.title ?? props.name;
  // The field template around this field shows the validator's errors and the
  // description; the label is shown here (the template leaves objects unlabelled).
  return (
    <div className="json-field">
      <label className="control-label" htmlFor={id}>
        {title}
        {props.required && <span className="required">*</span>}
      </label>
      <textarea
        id={id}
        className="json-editor"
        spellCheck={false}
        rows={Math.min(12, Math.max(3, text.split("\n").length))}
        value={text}
        onChange={(e) => {
          const next = e.target.value;
          setText(next);
          if (next.trim() === "") {
            setProblem(null);
            last.current = undefined;
            props.onChange(undefined);
            return;
          }
          try {
            const value = JSON.parse(next);
            if (props.schema.type === "object" && (typeof value !== "object" || value === null || Array.isArray(value))) {
              setProblem("must be a JSON object");
              return;
            }
            setProblem(null);
            last.current = value;
            props.onChange(value);
          } catch (err) {
            setProblem(`invalid JSON: ${(err as Error).message}`);
          }
        }}
      />
      {problem && <div className="text-danger json-problem">{problem}</div>}
    </div>
  );
}

const widgets: RegistryWidgetsType = { resource: ResourceWidget, toggle: ToggleWidget };
const fields: RegistryFieldsType = { json: JsonField };

/** Clearer words for the validator's messages. */
function transformErrors(errors: RJSFValidationError[]): RJSFValidationError[] {
  return errors.map((error) => {
    if (error.name === "required") return { ...error, message: "required" };
    if (error.name === "enum") {
      const allowed = (error.params as { allowedValues?: unknown[] }).allowedValues ?? [];
      return { ...error, message: `must be one of ${allowed.map((v) => JSON.stringify(v)).join(", ")}` };
    }
    return error;
  });
}

export interface SchemaFormProps {
  schema: JsonSchema | null | undefined;
  value: Record<string, unknown>;
  onChange: (value: Record<string, unknown>) => void;
  onSubmit?: (value: Record<string, unknown>) => void;
  submitLabel?: string;
  busy?: boolean;
  /** Shown without a submit button (the editor's preview). */
  preview?: boolean;
}

export function SchemaForm({ schema, value, onChange, onSubmit, submitLabel = "Run", busy, preview }: SchemaFormProps) {
  const mapped = useMemo(() => mapInputSchema(schema), [schema]);
  const form = useRef<Form>(null);
  // Messages show once the person edits a field (then live, before any submit), not
  // for a form they have not touched yet.
  const [touched, setTouched] = useState(false);
  useEffect(() => {
    // Validated on every change once touched (the form's own live validation would
    // miss the edit that touched it).
    if (touched) form.current?.validateFormWithFormData(value);
  }, [touched, value]);
  const empty = Object.keys(mapped.schema.properties ?? {}).length === 0;
  return (
    <div
      className="schema-form"
      onKeyDown={onCtrlEnter(() => form.current?.submit())}
      onChangeCapture={() => setTouched(true)}
      onInputCapture={() => setTouched(true)}
    >
      {empty && <p className="hint">No inputs.</p>}
      <Form
        ref={form}
        schema={mapped.schema}
        uiSchema={{ ...mapped.uiSchema, "ui:submitButtonOptions": { norender: true } }}
        formData={value}
        validator={validator}
        widgets={widgets}
        fields={fields}
        showErrorList={false}
        noHtml5Validate
        transformErrors={transformErrors}
        onChange={(event) => onChange((event.formData ?? {}) as Record<string, unknown>)}
        onSubmit={(event) => onSubmit?.((event.formData ?? {}) as Record<string, unknown>)}
      />
      {!preview && onSubmit && (
        <button
          type="button"
          className="primary"
          disabled={busy}
          onClick={() => form.current?.submit()}
          title="Ctrl+Enter"
        >
          {busy ? "Starting…" : submitLabel}
        </button>
      )}
    </div>
  );
}
