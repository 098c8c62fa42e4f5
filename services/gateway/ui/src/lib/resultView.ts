// How a job's result is shown: an error, an image, a file to download, a table (an
// array of objects) or a JSON tree. Pure: the components render what this decides.

export type ResultView =
  | { kind: "error"; name: string; message: string; stack?: string; step?: string }
  | { kind: "image"; src: string; mime: string }
  | { kind: "file"; href: string; filename: string }
  | { kind: "table"; columns: string[]; rows: Record<string, unknown>[] }
  | { kind: "json"; value: unknown };

const IMAGE_KEYS: Record<string, string> = {
  png: "image/png",
  jpeg: "image/jpeg",
  jpg: "image/jpeg",
  gif: "image/gif",
  webp: "image/webp",
  svg: "image/svg+xml",
};
/** The first bytes of a PNG file, in base64. */
const PNG_BASE64 = "iVBORw0KGgo";
const TABLE_MAX_COLUMNS = 50;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isBase64(text: string): boolean {
  return /^[A-Za-z0-9+/\s]*={0,2}$/.test(text);
}

function errorView(value: Record<string, unknown>): ResultView | null {
  const keys = Object.keys(value);
  if (keys.length !== 1 || keys[0] !== "error" || !isPlainObject(value.error)) return null;
  const error = value.error;
  return {
    kind: "error",
    name: typeof error.name === "string" ? error.name : "Error",
    message: typeof error.message === "string" ? error.message : JSON.stringify(error),
    stack: typeof error.stack === "string" ? error.stack : undefined,
    step: typeof error.step_id === "string" ? error.step_id : undefined,
  };
}

function imageView(value: unknown): ResultView | null {
  if (typeof value === "string") {
    if (value.startsWith("data:image/")) {
      return { kind: "image", src: value, mime: value.slice(5, value.indexOf(";")) };
    }
    if (value.startsWith(PNG_BASE64) && isBase64(value)) {
      return { kind: "image", src: `data:image/png;base64,${value}`, mime: "image/png" };
    }
    return null;
  }
  if (!isPlainObject(value)) return null;
  const keys = Object.keys(value);
  if (keys.length !== 1) return null;
  const mime = IMAGE_KEYS[keys[0]!];
  const data = value[keys[0]!];
  if (!mime || typeof data !== "string") return null;
  if (mime === "image/svg+xml" && data.trimStart().startsWith("<")) {
    return { kind: "image", src: `data:${mime};charset=utf-8,${encodeURIComponent(data)}`, mime };
  }
  if (!isBase64(data)) return null;
  return { kind: "image", src: `data:${mime};base64,${data.replace(/\s/g, "")}`, mime };
}

function fileView(value: unknown): ResultView | null {
  if (!isPlainObject(value) || Object.keys(value).length !== 1 || !("file" in value)) return null;
  const file = value.file;
  let content: unknown = file;
  let filename = "result";
  if (isPlainObject(file)) {
    content = file.content;
    if (typeof file.filename === "string" && file.filename) filename = file.filename;
  }
  if (typeof content !== "string" || !isBase64(content)) return null;
  return {
    kind: "file",
    href: `data:application/octet-stream;base64,${content.replace(/\s/g, "")}`,
    filename,
  };
}

function tableView(value: unknown): ResultView | null {
  if (!Array.isArray(value) || value.length === 0 || !value.every(isPlainObject)) return null;
  const columns: string[] = [];
  for (const row of value as Record<string, unknown>[]) {
    for (const key of Object.keys(row)) {
      if (!columns.includes(key)) columns.push(key);
    }
  }
  if (columns.length === 0 || columns.length > TABLE_MAX_COLUMNS) return null;
  return { kind: "table", columns, rows: value as Record<string, unknown>[] };
}

/** How to show ``value``, a job's result (``{"error": {...}}`` for a failed job). */
export function viewOf(value: unknown): ResultView {
  if (isPlainObject(value)) {
    const error = errorView(value);
    if (error) return error;
  }
  return imageView(value) ?? fileView(value) ?? tableView(value) ?? { kind: "json", value };
}

/** A table cell's text. */
export function cellText(value: unknown): string {
  if (value === undefined) return "";
  if (value === null) return "null";
  if (typeof value === "string") return value;
  return JSON.stringify(value);
}
