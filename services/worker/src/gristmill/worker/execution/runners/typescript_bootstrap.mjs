// Run one TypeScript job on Bun or Deno: import the user's module, call its exported
// `main` with the job's arguments, write the result (or a structured error) to a file.
//
// Started by the worker (see typescript.py) as
//
//     bun  run [flags] typescript_bootstrap.mjs SCRIPT ARGS RESULT
//     deno run [flags] typescript_bootstrap.mjs SCRIPT ARGS RESULT
//
// with the job's workdir as the current directory:
//
// * SCRIPT: absolute path of the user's `main.ts`.
// * ARGS: JSON `{"args": {name: value}, "dates": [names]}`. `main` is called with
//   positional arguments in the order of its parameters, whose names are read from
//   `main.toString()` (the code as the runtime runs it, types removed); a name missing
//   from `args` is passed as `undefined`, so the script's own default applies, and a
//   destructuring parameter receives `undefined`. Parameters typed `Date` (`dates`,
//   found by the worker's introspection) receive a `Date`.
// * RESULT: receives `{"ok": true, "result": ...}` or `{"ok": false, "error": {"name",
//   "message", "stack", "location"}}`. Nothing goes through stdout, so what the script
//   prints cannot corrupt its result.
//
// The process exits once `main` has settled (0: returned, 1: failed), even if the
// script left timers or sockets open. An exception thrown later by a callback, or a
// promise rejected without a handler while `main` runs, fails the job.
//
// Plain JavaScript with no imports (start-up time is per job); runs with Deno's
// permissions narrowed to reading SCRIPT and ARGS and writing RESULT (`nativets`).

const deno = globalThis.Deno;
const argv = deno ? deno.args : globalThis.process.argv.slice(2);
const [scriptPath, argsPath, resultPath] = argv;
const SCRIPT_NAME = "main.ts";
const MAX_DEPTH = 500;

let finished = false;

async function finish(envelope, code) {
  if (finished) return;
  finished = true;
  if (deno) {
    deno.writeTextFileSync(resultPath, envelope);
    deno.exit(code);
  } else {
    // Bun's own file API: `node:fs` would add milliseconds to every start.
    await globalThis.Bun.write(resultPath, envelope);
    globalThis.process.exit(code);
  }
}

function fail(error) {
  return finish(JSON.stringify({ ok: false, error }), 1);
}

// -- failures -------------------------------------------------------------------------

const scriptUrl = (() => {
  const url = new URL("file:///");
  url.pathname = scriptPath;
  return url.href;
})();
const scriptDirUrl = new URL(".", scriptUrl).href;
const scriptDir = scriptPath.slice(0, scriptPath.lastIndexOf("/") + 1);

function clean(text) {
  // Where the worker keeps the script is its own business: the script shows as
  // `main.ts`, files beside it as `./name`. ANSI colours (a runtime's own messages)
  // are stripped.
  return String(text)
    .split(scriptUrl).join(SCRIPT_NAME)
    .split(scriptPath).join(SCRIPT_NAME)
    .split(scriptDirUrl).join("./")
    .split(scriptDir).join("./")
    .replace(/\x1b\[[0-9;]*m/g, "");
}

function trimStack(stack) {
  if (typeof stack !== "string") return null;
  const self = import.meta.url;
  const selfPath = decodeURIComponent(new URL(self).pathname);
  const lines = stack.split("\n").filter((line) => !line.includes(self) && !line.includes(selfPath));
  return clean(lines.join("\n"));
}

function locate(text) {
  const match = /main\.ts:(\d+):(\d+)/.exec(text ?? "");
  return match ? `line ${match[1]}, column ${match[2]}` : null;
}

function describe(value) {
  if (value instanceof Error || (value && typeof value === "object" && "message" in value)) {
    const name = value.name || value.constructor?.name || "Error";
    let message = "";
    try {
      message = clean(value.message ?? "");
    } catch {
      message = `<${name} with an unprintable message>`;
    }
    const stack = trimStack(value.stack);
    const error = { name, message, stack, location: locate(stack) };
    if (value.cause !== undefined && stack !== null) {
      const cause = describe(value.cause);
      error.stack = `${stack}\nCaused by: ${cause.stack ?? `${cause.name}: ${cause.message}`}`;
    }
    return error;
  }
  let message;
  try {
    message = typeof value === "string" ? value : JSON.stringify(value) ?? String(value);
  } catch {
    message = String(value);
  }
  return { name: "Error", message: `a non-Error value was thrown: ${message}`, stack: null, location: null };
}

function importFailure(value) {
  // Bun: BuildMessage (a parse error, with its position), ResolveMessage (a module
  // that cannot be found). Deno: a TypeError whose message is "SyntaxError: ..." or
  // whose code is ERR_MODULE_NOT_FOUND (a file, an npm or jsr package). Anything
  // else was thrown by the script's top-level code.
  const kind = value?.constructor?.name;
  if (kind === "BuildMessage") {
    const position = value.position;
    const location = position ? `line ${position.line}, column ${position.column}` : null;
    const message = clean(value.message) + (location ? ` at ${location}` : "");
    const stack = position?.lineText
      ? `SyntaxError: ${clean(value.message)}\n  ${position.lineText}\n  ${" ".repeat(Math.max(position.column - 1, 0))}^`
      : null;
    return { name: "SyntaxError", message, stack, location };
  }
  const text = typeof value?.message === "string" ? value.message : "";
  const syntax = kind !== "ResolveMessage" && text.startsWith("SyntaxError: ");
  if (syntax || kind === "ResolveMessage" || value?.code === "ERR_MODULE_NOT_FOUND") {
    const location = locate(text);
    const first = clean(text.split("\n")[0].replace(/^SyntaxError: /, ""));
    return {
      name: syntax ? "SyntaxError" : "ImportError",
      message: first + (syntax && location ? ` at ${location}` : ""),
      stack: kind === "ResolveMessage" ? null : clean(text),
      location,
    };
  }
  return describe(value);
}

// -- arguments ------------------------------------------------------------------------

// Parameter names of a function from its source (types are gone by then): top-level
// comma-separated parameters, each `name` or `name = default`; a destructuring pattern
// has no name (`null`: it receives `undefined`). A rest parameter ends the list (it
// receives nothing).
function parameterNames(fn) {
  const source = Function.prototype.toString.call(fn);
  let start = source.indexOf("(");
  const arrow = source.indexOf("=>");
  if (arrow !== -1 && (start === -1 || arrow < start)) {
    const head = source.slice(0, arrow).replace(/^async\s+/, "").trim();
    return /^[\p{L}_$][\p{L}\p{N}_$]*$/u.test(head) ? [head] : [];
  }
  if (start === -1) return [];
  const params = [];
  let depth = 0;
  let current = "";
  for (let i = start + 1; i < source.length; i++) {
    const ch = source[i];
    if (ch === '"' || ch === "'" || ch === "`") {
      let j = i + 1;
      while (j < source.length && source[j] !== ch) j += source[j] === "\\" ? 2 : 1;
      current += source.slice(i, j + 1);
      i = j;
      continue;
    }
    if (ch === "/" && source[i + 1] === "*") {
      i = source.indexOf("*/", i + 2) + 1 || source.length;
      continue;
    }
    if (ch === "/" && source[i + 1] === "/") {
      i = source.indexOf("\n", i) === -1 ? source.length : source.indexOf("\n", i);
      continue;
    }
    if (ch === "(" || ch === "[" || ch === "{") depth++;
    if (ch === ")" || ch === "]" || ch === "}") {
      if (depth === 0) break;
      depth--;
    }
    if (ch === "," && depth === 0) {
      params.push(current);
      current = "";
      continue;
    }
    current += ch;
  }
  if (current.trim()) params.push(current);
  const names = [];
  for (const param of params) {
    if (/^\s*\.\.\./.test(param)) break;
    const match = /^\s*([\p{L}_$][\p{L}\p{N}_$]*)/u.exec(param);
    names.push(match ? match[1] : null);
  }
  return names;
}

function positional(main, spec) {
  const args = spec.args ?? {};
  const dates = new Set(spec.dates ?? []);
  return parameterNames(main).map((name) => {
    if (name === null || !Object.hasOwn(args, name)) return undefined;
    const value = args[name];
    return dates.has(name) && typeof value === "string" ? new Date(value) : value;
  });
}

// -- the result -----------------------------------------------------------------------

class NotJson extends Error {}

function refuse(value) {
  // What JSON.stringify would drop or turn into something else without a word.
  switch (typeof value) {
    case "bigint":
      return `a bigint (${value}n)`;
    case "function":
      return "a function";
    case "symbol":
      return "a symbol";
    case "number":
      return Number.isFinite(value) ? null : `the number ${value} (NaN and infinities are not JSON)`;
    case "object":
      if (value instanceof Map) return "a Map (return Object.fromEntries(map))";
      if (value instanceof Set) return "a Set (return [...set])";
      return null;
    default:
      return null;
  }
}

function findUnserializable(value, path, active, depth) {
  if (value !== null && typeof value === "object" && typeof value.toJSON === "function") {
    try {
      value = value.toJSON();
    } catch (error) {
      return [path, `a value whose toJSON() failed (${error})`];
    }
  }
  const what = refuse(value);
  if (what !== null) return [path, what];
  if (value === null || typeof value !== "object") return null;
  if (depth >= MAX_DEPTH) return [path, `a value nested more than ${MAX_DEPTH} levels deep`];
  if (active.has(value)) return [path, "a circular reference"];
  active.add(value);
  try {
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const found = findUnserializable(value[i], `${path}[${i}]`, active, depth + 1);
        if (found) return found;
      }
    } else {
      for (const key of Object.keys(value)) {
        if (value[key] === undefined) continue;
        const segment = /^[\p{L}_$][\p{L}\p{N}_$]*$/u.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`;
        const found = findUnserializable(value[key], path + segment, active, depth + 1);
        if (found) return found;
      }
    }
  } finally {
    active.delete(value);
  }
  return null;
}

function encodeSuccess(result) {
  const replacer = (_key, value) => {
    if (refuse(value) !== null) throw new NotJson();
    return value;
  };
  try {
    return JSON.stringify({ ok: true, result: result === undefined ? null : result }, replacer);
  } catch (error) {
    const found = findUnserializable(result, "$", new Set(), 0);
    const detail = found ? `${found[1]} at ${found[0]}` : String(error?.message ?? error);
    return JSON.stringify({
      ok: false,
      error: {
        name: "ResultNotSerializable",
        message: `the result of main() is not JSON serializable: ${detail}`,
        stack: null,
        location: found ? found[0] : null,
      },
    });
  }
}

// -- the run --------------------------------------------------------------------------

if (deno) {
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    fail(describe(event.reason));
  });
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    fail(describe(event.error));
  });
} else {
  globalThis.process.on("unhandledRejection", (reason) => fail(describe(reason)));
  globalThis.process.on("uncaughtException", (error) => fail(describe(error)));
}

const spec = JSON.parse(
  deno ? await deno.readTextFile(argsPath) : await globalThis.Bun.file(argsPath).text(),
);

let module;
try {
  module = await import(scriptUrl);
} catch (error) {
  await fail(importFailure(error));
}
if (!finished) {
  const main = module.main;
  if (typeof main !== "function") {
    await fail({
      name: "MissingMain",
      message:
        main === undefined
          ? `${SCRIPT_NAME} exports no main function: add \`export async function main(...)\`, ` +
            "which is called with the job's arguments"
          : `main is a ${typeof main}, not a function`,
      stack: null,
      location: null,
    });
  } else {
    let outcome;
    try {
      outcome = main(...positional(main, spec));
      if (outcome !== null && typeof outcome === "object" && typeof outcome.then === "function") {
        outcome = await outcome;
      }
    } catch (error) {
      await fail(describe(error));
    }
    if (!finished) {
      const envelope = encodeSuccess(outcome);
      await finish(envelope, envelope.startsWith('{"ok":true') ? 0 : 1);
    }
  }
}
