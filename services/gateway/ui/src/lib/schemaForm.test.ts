import { describe, expect, it } from "vitest";
import validator from "@rjsf/validator-ajv8";
import { initialValues, inputControls, mapInputSchema } from "./schemaForm";
import type { JsonSchema } from "./types";

// What the gateway reads from the seed example's signature:
//   def main(a: int, b: Literal["my", "enum"], c: Postgresql, d: str = "default",
//            e: dict = {"nested": "object"})
const SEED: JsonSchema = {
  $schema: "https://json-schema.org/draft/2020-12/schema",
  type: "object",
  properties: {
    a: { type: "integer" },
    b: { type: "string", enum: ["my", "enum"] },
    c: { type: "object", format: "resource-postgresql" },
    d: { type: "string", default: "default" },
    e: { type: "object", default: { nested: "object" } },
  },
  required: ["a", "b", "c"],
  order: ["a", "b", "c", "d", "e"],
};

describe("the seed example", () => {
  it("maps to a number, a select, a resource picker, a text field and an object editor", () => {
    expect(inputControls(SEED)).toEqual([
      { name: "a", kind: "integer" },
      { name: "b", kind: "select" },
      { name: "c", kind: "resource" },
      { name: "d", kind: "text" },
      { name: "e", kind: "json" },
    ]);
    const { schema, uiSchema } = mapInputSchema(SEED);
    expect(uiSchema["ui:order"]).toEqual(["a", "b", "c", "d", "e", "*"]);
    expect(uiSchema.a["ui:widget"]).toBe("updown");
    expect(uiSchema.b["ui:widget"]).toBe("select");
    expect(uiSchema.c["ui:widget"]).toBe("resource");
    expect(uiSchema.c["ui:options"]).toMatchObject({ resourceType: "postgresql" });
    expect(uiSchema.d["ui:widget"]).toBeUndefined();
    expect(uiSchema.e["ui:field"]).toBe("json");
    expect(schema.required).toEqual(["a", "b", "c"]);
    const properties = schema.properties as Record<string, Record<string, unknown>>;
    expect(properties.c).toEqual({ type: "string", title: "c" });
    expect(properties.d!.default).toBe("default");
    expect(properties.e!.default).toEqual({ nested: "object" });
    expect(schema).not.toHaveProperty("$schema");
    expect(schema).not.toHaveProperty("order");
  });

  it("starts with the defaults and validates as the API would", () => {
    expect(initialValues(SEED)).toEqual({ d: "default", e: { nested: "object" } });
    const { schema } = mapInputSchema(SEED);
    const good = validator.validateFormData(
      { a: 1, b: "my", c: "$res:u/admin/db", d: "x", e: { k: 1 } },
      schema,
    );
    expect(good.errors).toEqual([]);
    const bad = validator.validateFormData({ a: 1.5, b: "other", d: "x" }, schema);
    // Required errors name the property without the leading dot.
    const where = bad.errors.map((e) => e.property!.replace(/^\./, "")).sort();
    expect(where).toEqual(["a", "b", "c"]);
  });
});

describe("other kinds of inputs", () => {
  const schema: JsonSchema = {
    type: "object",
    properties: {
      ratio: { type: "number", default: 0.5 },
      when: { type: "string", format: "date" },
      at: { type: "string", format: "date-time" },
      mail: { type: "string", format: "email" },
      notes: { type: "string", format: "multiline" },
      flag: { type: "boolean", default: true },
      tags: { type: "array", items: { type: "string" }, default: ["a"] },
      colors: { type: "array", items: { type: "string", enum: ["red", "blue"] } },
      point: {
        type: "object",
        properties: { x: { type: "integer" }, y: { type: "integer", nullable: true } },
        required: ["x"],
      },
      anything: {},
      maybe: { type: "integer", nullable: true },
    },
    required: ["when"],
  };

  it("chooses a control for each", () => {
    expect(Object.fromEntries(inputControls(schema).map((c) => [c.name, c.kind]))).toEqual({
      ratio: "number",
      when: "date",
      at: "datetime",
      mail: "email",
      notes: "textarea",
      flag: "toggle",
      tags: "array",
      colors: "multiselect",
      point: "object",
      anything: "json",
      maybe: "integer",
    });
  });

  it("keeps formats the validator checks and drops hints it does not know", () => {
    const { schema: mapped, uiSchema } = mapInputSchema(schema);
    const properties = mapped.properties as Record<string, Record<string, unknown>>;
    expect(properties.when!.format).toBe("date");
    expect(properties.mail!.format).toBe("email");
    expect(properties.notes!.format).toBeUndefined();
    expect(uiSchema.notes["ui:widget"]).toBe("textarea");
    expect(uiSchema.flag["ui:widget"]).toBe("toggle");
    expect(uiSchema.colors["ui:widget"]).toBe("checkboxes");
    expect(properties.maybe).not.toHaveProperty("nullable");
    const point = properties.point as { properties: Record<string, unknown>; required: string[] };
    expect(Object.keys(point.properties)).toEqual(["x", "y"]);
    expect(point.required).toEqual(["x"]);
    const errors = validator.validateFormData(
      { when: "not a date", mail: "nope", point: { x: "1" } },
      mapped,
    ).errors;
    expect(errors.map((e) => e.property).sort()).toEqual([".mail", ".point.x", ".when"]);
  });

  it("treats a missing schema as no inputs", () => {
    expect(inputControls(null)).toEqual([]);
    expect(mapInputSchema(undefined).schema).toEqual({ type: "object", properties: {} });
  });
});
