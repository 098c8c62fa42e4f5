// A flow document (summary, description, schema, value) as text the author edits,
// in YAML or JSON, and the module a validation error's location points at.

import { parse, stringify, YAMLParseError } from "yaml";
import type { Flow, FlowModule, FlowValue } from "./types";

export type FlowFormat = "yaml" | "json";

export interface ParsedFlow {
  flow: Omit<Flow, "path"> | null;
  error: { message: string; line?: number } | null;
}

export function flowToText(flow: Omit<Flow, "path">, format: FlowFormat): string {
  const document = {
    summary: flow.summary ?? "",
    description: flow.description ?? "",
    schema: flow.schema ?? { type: "object", properties: {} },
    value: flow.value,
  };
  return format === "json" ? `${JSON.stringify(document, null, 2)}\n` : stringify(document, { lineWidth: 0 });
}

export function parseFlowText(text: string, format: FlowFormat): ParsedFlow {
  try {
    const value = format === "json" ? JSON.parse(text) : parse(text);
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return { flow: null, error: { message: "the document must be an object with summary, schema and value" } };
    }
    const modules = (value as { value?: FlowValue }).value?.modules;
    if (!Array.isArray(modules)) {
      return { flow: null, error: { message: "value.modules must be a list of modules" } };
    }
    return { flow: value as Omit<Flow, "path">, error: null };
  } catch (err) {
    if (err instanceof YAMLParseError) {
      return { flow: null, error: { message: err.message.split("\n")[0]!, line: err.linePos?.[0]?.line } };
    }
    return { flow: null, error: { message: (err as Error).message } };
  }
}

/** The id of the innermost module ``location`` (``value.modules[1].value.branches[0].modules[2]...``) names. */
export function moduleAtLocation(value: FlowValue | undefined, location: string | undefined): string | null {
  if (!value || !location) return null;
  const steps = location.match(/[A-Za-z_]+|\[\d+\]/g) ?? [];
  let current: unknown = { value };
  let found: string | null = null;
  for (const step of steps) {
    if (current === null || typeof current !== "object") break;
    const key = step.startsWith("[") ? Number(step.slice(1, -1)) : step;
    current = (current as Record<string | number, unknown>)[key];
    const module = current as FlowModule | undefined;
    if (module && typeof module === "object" && typeof module.id === "string" && typeof module.value === "object") {
      found = module.id;
    }
  }
  return found;
}

export const NEW_FLOW = `summary: Sum, loop and branch
description: ""
schema:
  type: object
  properties:
    n:
      type: integer
      default: 3
  required: []
value:
  modules:
    - id: numbers
      value:
        type: rawscript
        language: python3
        content: |
          def main(n: int):
              return list(range(1, n + 1))
        input_transforms:
          n: { type: javascript, expr: flow_input.n }
    - id: each
      value:
        type: forloopflow
        iterator: { type: javascript, expr: results.numbers }
        skip_failures: false
        modules:
          - id: square
            value:
              type: rawscript
              language: python3
              content: |
                def main(x: int):
                    return x * x
              input_transforms:
                x: { type: javascript, expr: flow_input.iter.value }
    - id: size
      value:
        type: branchone
        branches:
          - summary: big
            expr: results.each.length > 2
            modules:
              - id: big
                value:
                  type: rawscript
                  language: python3
                  content: |
                    def main(squares: list):
                        return {"big": sum(squares)}
                  input_transforms:
                    squares: { type: javascript, expr: results.each }
        default:
          - id: small
            value:
              type: rawscript
              language: python3
              content: |
                def main(squares: list):
                    return {"small": sum(squares)}
              input_transforms:
                squares: { type: javascript, expr: results.each }
`;
