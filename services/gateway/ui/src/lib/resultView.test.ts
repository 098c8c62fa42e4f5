import { describe, expect, it } from "vitest";
import { cellText, viewOf } from "./resultView";

// A 1x1 transparent PNG.
const PNG =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";

describe("viewOf", () => {
  it("shows arrays of objects as tables with every column", () => {
    expect(viewOf([{ a: 1 }, { a: 2, b: "x" }])).toEqual({
      kind: "table",
      columns: ["a", "b"],
      rows: [{ a: 1 }, { a: 2, b: "x" }],
    });
  });

  it("shows base64 PNGs as images, bare or under a png key", () => {
    expect(viewOf(PNG)).toEqual({ kind: "image", src: `data:image/png;base64,${PNG}`, mime: "image/png" });
    expect(viewOf({ png: PNG })).toMatchObject({ kind: "image", mime: "image/png" });
    expect(viewOf({ jpeg: "/9j/4AAQ" })).toMatchObject({ kind: "image", mime: "image/jpeg" });
  });

  it("offers files for download", () => {
    expect(viewOf({ file: { content: "aGVsbG8=", filename: "hello.txt" } })).toEqual({
      kind: "file",
      href: "data:application/octet-stream;base64,aGVsbG8=",
      filename: "hello.txt",
    });
  });

  it("shows a failed job's error with its stack", () => {
    expect(
      viewOf({ error: { name: "ValueError", message: "bad", stack: "Traceback ...", step_id: "b" } }),
    ).toEqual({ kind: "error", name: "ValueError", message: "bad", stack: "Traceback ...", step: "b" });
  });

  it("shows anything else as JSON", () => {
    for (const value of [null, 3, "text", [1, 2], { a: { b: 1 } }, [], [{ a: 1 }, 2], { error: "x", other: 1 }]) {
      expect(viewOf(value)).toEqual({ kind: "json", value });
    }
    expect(viewOf({ png: "not base64!" })).toEqual({ kind: "json", value: { png: "not base64!" } });
  });
});

describe("cellText", () => {
  it("writes strings as they are and other values as JSON", () => {
    expect(cellText("a")).toBe("a");
    expect(cellText(1)).toBe("1");
    expect(cellText({ a: 1 })).toBe('{"a":1}');
    expect(cellText(null)).toBe("null");
    expect(cellText(undefined)).toBe("");
  });
});
