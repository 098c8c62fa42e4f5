// A warm Bun interpreter for one script version, inside the job sandbox.
//
// Started once per script version by the worker (interpreter.py, bun.py), inside the
// same bubblewrap sandbox as an ordinary job and with the same Bun flags and cache
// settings:
//
//     bun run [flags] bun_template.mjs SOCKET_FD SCRIPT BOOTSTRAP SANDBOXED
//
// It imports what SCRIPT imports at its top level (its npm packages, once: that is
// the warm part), says `ready`, and then serves `run` frames one at a time over the
// socket (protocol.py: a 4-byte big-endian length, then JSON). Bun cannot fork, so a
// job runs in this process; what keeps jobs apart:
//
// * the job runs exactly as an ordinary one: BOOTSTRAP (typescript_bootstrap.mjs) is
//   imported afresh, which imports SCRIPT afresh (its module is dropped from the
//   module registry after each job, so module-level state starts over), calls `main`
//   with the job's arguments and writes the result file; npm packages stay loaded;
// * `process.env` is the job's own environment (read from a file in its directory),
//   and children started with `Bun.spawn` get it too; its directory is the working
//   directory; `process.argv` is a cold job's;
// * afterwards: timers the job started through the global functions are cleared,
//   listeners it added to `process` removed, every process it started killed, the
//   sandbox's `/tmp` and `/dev/shm` emptied, and keys it added to `globalThis`
//   deleted. If it changed or removed an existing global, or changed a built-in
//   prototype (`Object.prototype`...), or an error escaped it (an exception thrown by
//   a callback, a promise rejected without a handler), the `done` frame asks the
//   worker to retire this interpreter;
// * `process.exit` called by the job ends this process, as it ends a cold job's: the
//   worker reports it as a cold job's exit and starts another interpreter.
//
// Output: this process's stdout and stderr go to the worker, which relays them to
// the running job's log (relay.py); pending writes are flushed before `done`.
//
// Not isolated: what a job does to the objects of a loaded package (or of a Node
// built-in module) stays for the next job, as does asynchronous work other than
// timers that it left running (an unawaited fetch, an open server); and this process
// has held the job's environment. See docs/adr/0011-dedicated-workers.md.

import fs from "node:fs";

// Captured before any job runs: a job that replaces these cannot break the clean-up.
const { apply, ownKeys, getOwnPropertyDescriptor: descriptor, deleteProperty } = Reflect;
const hasOwn = Object.hasOwn;
const same = Object.is;
const stringify = JSON.stringify;
const parse = JSON.parse;
const { readFileSync, writeSync, existsSync, readdirSync, rmSync, read, realpathSync } = fs;
const kill = process.kill.bind(process);
const realExit = process.exit.bind(process);
const chdir = process.chdir.bind(process);
const memoryUsage = process.memoryUsage.bind(process);
const bytesOf = Buffer.from.bind(Buffer);
const setBytes = Uint8Array.prototype.set;
const listeners = process.listeners.bind(process);
const eventNames = process.eventNames.bind(process);
const removeListener = process.removeListener.bind(process);
const on = process.on.bind(process);

const [socketArg, scriptPath, bootstrapPath, sandboxedArg] = process.argv.slice(2);
const SOCKET = Number(socketArg);
const SANDBOXED = sandboxedArg === "1";
// The module registry knows modules by their real paths.
const SCRIPT_KEYS = new Set([scriptPath, realpathSync(scriptPath)]);
const BOOTSTRAP_PREFIXES = [`${bootstrapPath}?`, `${realpathSync(bootstrapPath)}?`];
const HOME = process.cwd();
const OWN_ARGV = process.argv;
const OWN_ENV = { ...process.env };
const PRIVATE_TMP = ["/tmp", "/dev/shm"];
/** Bun's caches, where they are inside the sandbox's `/tmp` (the worker's data
 *  directory below the host's `/tmp`): the packages the warm-up installed stay. */
const KEPT = [OWN_ENV.BUN_INSTALL_CACHE_DIR, OWN_ENV.BUN_RUNTIME_TRANSPILER_CACHE_PATH]
  .filter((path) => typeof path === "string" && path.startsWith("/"))
  .map((path) => {
    try {
      return realpathSync(path);
    } catch {
      return path;
    }
  });
const SWEEP_ROUNDS = 200;
const startedAt = Date.now() / 1000;

/** The job running now: `{timers, uncaught, status}`; null between jobs. */
let current = null;

// -- the socket -----------------------------------------------------------------------

let received = Buffer.alloc(0);

function send(frame) {
  const body = bytesOf(stringify(frame));
  const size = body.length;
  const data = new Uint8Array(4 + size);
  data[0] = size >>> 24;
  data[1] = (size >>> 16) & 0xff;
  data[2] = (size >>> 8) & 0xff;
  data[3] = size & 0xff;
  apply(setBytes, data, [body, 4]);
  let sent = 0;
  while (sent < data.length) sent += writeSync(SOCKET, data, sent, data.length - sent);
}

function readSome() {
  const chunk = Buffer.alloc(65536);
  return new Promise((resolve, reject) =>
    read(SOCKET, chunk, 0, chunk.length, null, (error, count) =>
      error ? reject(error) : resolve(chunk.subarray(0, count)),
    ),
  );
}

/** The next frame, or null once the worker closed the socket. */
async function receive() {
  for (;;) {
    if (received.length >= 4) {
      const size = received.readUInt32BE(0);
      if (size > 64 * 1024) throw new Error(`frame of ${size} bytes`);
      if (received.length >= 4 + size) {
        const frame = parse(received.subarray(4, 4 + size).toString("utf8"));
        received = received.subarray(4 + size);
        return frame;
      }
    }
    const data = await readSome();
    if (data.length === 0) return null;
    received = Buffer.concat([received, data]);
  }
}

// -- what a job may leave behind --------------------------------------------------------

// Timers: the global functions record what they start while a job runs.
for (const [start, clear] of [
  ["setTimeout", "clearTimeout"],
  ["setInterval", "clearInterval"],
  ["setImmediate", "clearImmediate"],
]) {
  const original = globalThis[start];
  const cancel = globalThis[clear];
  if (typeof original !== "function" || typeof cancel !== "function") continue;
  const tracked = {
    [start](...args) {
      const timer = apply(original, this, args);
      if (current !== null) current.timers.push([cancel, timer]);
      return timer;
    },
  }[start];
  for (const key of ownKeys(original)) {
    if (!hasOwn(tracked, key)) Object.defineProperty(tracked, key, descriptor(original, key));
  }
  globalThis[start] = tracked;
}

// Bun.spawn takes the environment the process started with unless told otherwise,
// not `process.env`: a job's children get the job's.
for (const name of ["spawn", "spawnSync"]) {
  const original = Bun[name];
  if (typeof original !== "function") continue;
  Bun[name] = {
    [name](command, options) {
      if (Array.isArray(command)) {
        if (options?.env === undefined) options = { ...options, env: { ...process.env } };
      } else if (command !== null && typeof command === "object" && command.env === undefined) {
        command = { ...command, env: { ...process.env } };
      }
      return apply(original, this, [command, options]);
    },
  }[name];
}

// Output: `process.stdout.write` to a pipe may return before its bytes are written;
// the callbacks say when they are, so the job's output is complete before `done`.
let pendingWrites = 0;
let onFlushed = null;
for (const stream of [process.stdout, process.stderr]) {
  const write = stream.write;
  stream.write = function (chunk, encoding, callback) {
    if (typeof encoding === "function") {
      callback = encoding;
      encoding = undefined;
    }
    pendingWrites++;
    const written = (error) => {
      pendingWrites--;
      if (pendingWrites === 0 && onFlushed !== null) onFlushed();
      if (typeof callback === "function") callback(error);
    };
    return apply(write, this, [chunk, encoding, written]);
  };
}

function flushed() {
  if (pendingWrites === 0) return Promise.resolve();
  return new Promise((resolve) => {
    onFlushed = () => {
      onFlushed = null;
      resolve();
    };
  });
}

// An error no job catches: the job's bootstrap fails the job with it (its own
// listeners); this interpreter is then retired. Between jobs (work a job left
// running), the interpreter ends: the worker starts another one.
function uncaught(error) {
  if (current !== null) {
    current.uncaught = true;
    return;
  }
  try {
    writeSync(2, `gristmill: an error escaped a finished job; the interpreter exits: ${error?.stack ?? error}\n`);
  } finally {
    realExit(70);
  }
}
on("uncaughtException", uncaught);
on("unhandledRejection", uncaught);

// `process.exit`: the bootstrap's, once it wrote the job's result, ends the job; any
// other (the script's) ends this process, as it would end a cold job's.
process.exit = function exit(code) {
  if (current !== null && current.finishing(code)) return;
  realExit(code);
};

// -- globals ----------------------------------------------------------------------------

const TypedArray = Object.getPrototypeOf(Uint8Array);
/** Objects whose own properties a job must leave as it found them. */
const WATCHED = [
  globalThis, Object, Object.prototype, Function, Function.prototype, Array, Array.prototype,
  String, String.prototype, Number, Number.prototype, Boolean.prototype, Symbol,
  Symbol.prototype, BigInt.prototype, Promise, Promise.prototype, RegExp, RegExp.prototype,
  Date, Date.prototype, Error, Error.prototype, Map.prototype, Set.prototype,
  WeakMap.prototype, WeakSet.prototype, JSON, Math, Reflect, TypedArray,
  TypedArray.prototype, Uint8Array.prototype, ArrayBuffer.prototype, Buffer, Buffer.prototype,
  URL, URL.prototype, URLSearchParams.prototype, Headers.prototype, Request.prototype,
  Response.prototype, console, Bun,
];

/** [object, {key: descriptor}, number of keys] for every watched object. */
function snapshot() {
  const taken = [];
  for (let i = 0; i < WATCHED.length; i++) {
    const object = WATCHED[i];
    const keys = ownKeys(object);
    const described = { __proto__: null };
    for (let j = 0; j < keys.length; j++) described[keys[j]] = descriptor(object, keys[j]);
    taken[taken.length] = [object, described, keys.length];
  }
  return taken;
}

function unchanged(before, after) {
  return (
    after !== undefined &&
    same(before.value, after.value) &&
    before.get === after.get &&
    before.set === after.set &&
    before.writable === after.writable &&
    before.enumerable === after.enumerable &&
    before.configurable === after.configurable
  );
}

/** Delete the globals a job added; whether everything else is as it was. */
function restoreGlobals(baseline) {
  let intact = true;
  for (let i = 0; i < baseline.length; i++) {
    const [object, described, count] = baseline[i];
    const keys = ownKeys(object);
    let kept = 0;
    for (let j = 0; j < keys.length; j++) {
      const key = keys[j];
      if (key in described) {
        kept++;
        if (!unchanged(described[key], descriptor(object, key))) intact = false;
      } else if (object !== globalThis || !deleteProperty(object, key)) {
        intact = false; // a key added to a built-in, or a global that cannot go
      }
    }
    if (kept !== count) intact = false; // a key removed
  }
  return intact;
}

// -- one job ----------------------------------------------------------------------------

function setEnvironment(env) {
  for (const key of Object.keys(process.env)) delete process.env[key];
  Object.assign(process.env, env);
}

function processListeners() {
  const found = new Map();
  for (const name of eventNames()) found.set(name, new Set(listeners(name)));
  return found;
}

function removeAddedListeners(before) {
  for (const name of eventNames()) {
    const kept = before.get(name);
    for (const listener of listeners(name)) {
      if (kept === undefined || !kept.has(listener)) removeListener(name, listener);
    }
  }
}

/** Drop the job's modules (the script's and its bootstrap's) from the registry, so
 *  that the next job imports them afresh; also any a late import put back. */
function forgetModules() {
  const cache = require.cache;
  for (const key of Object.keys(cache)) {
    if (SCRIPT_KEYS.has(key) || BOOTSTRAP_PREFIXES.some((prefix) => key.startsWith(prefix))) {
      delete cache[key];
    }
  }
}

function pids() {
  const found = [];
  for (const name of readdirSync("/proc")) {
    const pid = Number(name);
    if (Number.isInteger(pid) && pid > 0) found.push(pid);
  }
  return found;
}

/** [state, parent pid] from /proc/<pid>/stat; null once it is gone. */
function stat(pid) {
  let raw;
  try {
    raw = readFileSync(`/proc/${pid}/stat`, "latin1");
  } catch {
    return null;
  }
  const fields = raw.slice(raw.lastIndexOf(")") + 2).split(" ");
  return [fields[0], Number(fields[1])];
}

/** Kill every process the job left; how many. In the sandbox's pid namespace that is
 *  every process but bubblewrap's (pid 1) and this one; without the sandbox, this
 *  process's descendants. */
function sweep() {
  const me = process.pid;
  const killed = new Set();
  for (let round = 0; round < SWEEP_ROUNDS; round++) {
    const parents = new Map();
    const alive = [];
    for (const pid of pids()) {
      if (pid === me || (SANDBOXED && pid === 1)) continue;
      const found = stat(pid);
      if (found === null || found[0] === "Z" || found[0] === "X") continue;
      parents.set(pid, found[1]);
      alive.push(pid);
    }
    const doomed = SANDBOXED ? alive : alive.filter((pid) => descends(pid, me, parents));
    if (doomed.length === 0) break;
    for (const pid of doomed) {
      try {
        kill(pid, "SIGKILL");
      } catch {}
      killed.add(pid);
    }
    Bun.sleepSync(1);
  }
  return killed.size;
}

function descends(pid, ancestor, parents) {
  for (let seen = 0; seen < 64 && pid > 1; seen++) {
    pid = parents.get(pid) ?? 0;
    if (pid === ancestor) return true;
  }
  return false;
}

/** Remove everything below `directory` but the `KEPT` caches. */
function empty(directory) {
  let names;
  try {
    names = readdirSync(directory);
  } catch {
    return;
  }
  for (const name of names) {
    const path = `${directory}/${name}`;
    if (KEPT.includes(path)) continue;
    if (KEPT.some((kept) => kept.startsWith(`${path}/`))) {
      empty(path);
      continue;
    }
    try {
      rmSync(path, { recursive: true, force: true });
    } catch {}
  }
}

async function run(frame, number, baseline) {
  const jobDir = `${HOME}/${frame.job}`;
  const resultPath = `${jobDir}/${frame.result}`;
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  const job = {
    timers: [],
    uncaught: false,
    finishing(code) {
      // The bootstrap exits right after writing the result: the job is over.
      if (!existsSync(resultPath)) return false;
      finish(code ?? 0);
      return true;
    },
  };
  const before = processListeners();
  try {
    setEnvironment(parse(readFileSync(`${jobDir}/${frame.env}`, "utf8")));
    chdir(jobDir);
    process.argv = [OWN_ARGV[0], bootstrapPath, frame.code, frame.args, frame.result];
    current = job;
    import(`${bootstrapPath}?job=${number}`).catch((error) => {
      writeSync(2, `gristmill: the job could not start: ${error?.stack ?? error}\n`);
      finish(70);
    });
  } catch (error) {
    writeSync(2, `gristmill: the job could not start: ${error?.stack ?? error}\n`);
    finish(70);
  }
  const status = await finished;
  current = null;
  // Each step on its own: a job that broke what one of them uses (a built-in it
  // replaced) must not keep the others from running, nor the `done` from going out.
  let intact = true;
  let swept = 0;
  const steps = [
    () => {
      for (let i = 0; i < job.timers.length; i++) apply(job.timers[i][0], undefined, [job.timers[i][1]]);
    },
    () => removeAddedListeners(before),
    () => (swept = sweep()),
    () => SANDBOXED && PRIVATE_TMP.forEach((directory) => empty(directory)),
    forgetModules,
    () => (intact = restoreGlobals(baseline) && intact),
    () => setEnvironment(OWN_ENV),
    () => chdir(HOME),
    () => {
      process.argv = OWN_ARGV;
      process.exitCode = undefined;
    },
  ];
  for (let i = 0; i < steps.length; i++) {
    try {
      steps[i]();
    } catch {
      intact = false;
    }
  }
  await flushed();
  let retire = "";
  if (job.uncaught) retire = "uncaught";
  else if (!intact) retire = "globals";
  return {
    t: "done",
    job: frame.job,
    status,
    maxrss_kb: 0,
    rss_kb: Math.round(memoryUsage().rss / 1024),
    swept,
    retire,
  };
}

// -- warming up -------------------------------------------------------------------------

/** Import the packages the script imports at its top level (only those: its own code
 *  runs in each job, with the job's environment). Failures are the job's to report. */
async function warmUp() {
  const errors = [];
  let imports;
  try {
    imports = new Bun.Transpiler({ loader: "ts" }).scanImports(readFileSync(scriptPath, "utf8"));
  } catch (error) {
    return [`${error?.name ?? "Error"}: ${error?.message ?? error}`];
  }
  const directory = scriptPath.slice(0, scriptPath.lastIndexOf("/"));
  for (const { kind, path } of imports) {
    if (kind !== "import-statement" || path.startsWith(".") || path.startsWith("/")) continue;
    try {
      await import(Bun.resolveSync(path, directory));
    } catch (error) {
      errors.push(`${path}: ${error?.name ?? "Error"}: ${error?.message ?? error}`);
    }
  }
  return errors;
}

async function serve() {
  const warmupErrors = await warmUp();
  const baseline = snapshot();
  send({
    t: "ready",
    pid: process.pid,
    runtime: `bun ${Bun.version}`,
    started_at: startedAt,
    warmup_errors: warmupErrors,
    modules: Object.keys(require.cache).length,
  });
  for (let number = 1; ; number++) {
    const frame = await receive();
    if (frame === null || frame.t === "stop") break;
    if (frame.t !== "run") continue; // a job is stopped by stopping this process
    send(await run(frame, number, baseline));
  }
  realExit(0);
}

await serve();
