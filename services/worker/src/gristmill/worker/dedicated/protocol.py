"""The frames a worker and its warm interpreter exchange over their socket.

A frame is a 4-byte big-endian length followed by that many bytes of JSON: an object
whose ``t`` names its kind. The worker sends ``run`` (with the job's output pipe
attached as ``SCM_RIGHTS``), ``kill`` and ``stop``; the interpreter answers ``ready``
once, then one ``done`` per ``run``. Nothing job-private travels here: the job's
arguments, environment and token are files in its own directory, read by the job's
forked process, never by the interpreter that outlives it.

The interpreters' sides speak the same format: ``python_template.py`` with the
standard library only, ``bun_template.mjs`` with Bun's. A Bun interpreter runs its jobs
in its own process: it gets no output pipe (the worker relays the interpreter's own
output to the job's log, see ``relay.py``) and no ``kill`` (a job is stopped by
stopping its interpreter).
"""

from __future__ import annotations

import struct

import msgspec

__all__ = [
    "HEADER",
    "MAX_FRAME_BYTES",
    "Done",
    "FrameBuffer",
    "FromInterpreter",
    "Kill",
    "ProtocolError",
    "Ready",
    "Run",
    "Stop",
    "ToInterpreter",
    "encode",
]

HEADER = struct.Struct(">I")
#: Frames are small (paths, ids, counters); anything longer is a broken peer.
MAX_FRAME_BYTES = 64 * 1024


class Run(msgspec.Struct, frozen=True, kw_only=True, tag="run", tag_field="t"):
    """Run one job: enter ``job`` (a directory below the interpreter's own), call
    ``main``. The paths are relative to that directory, but ``code`` for Bun: the
    script's absolute path (its module, imported afresh for each job)."""

    job: str
    code: str
    args: str
    result: str
    env: str


class Kill(msgspec.Struct, frozen=True, kw_only=True, tag="kill", tag_field="t"):
    """Send ``signal`` to the running job (SIGKILL also sweeps everything it started)."""

    signal: int


class Stop(msgspec.Struct, frozen=True, kw_only=True, tag="stop", tag_field="t"):
    """Exit once idle."""


class Ready(msgspec.Struct, frozen=True, kw_only=True, tag="ready", tag_field="t"):
    """The interpreter is warm: its imports are done."""

    #: Its pid inside the sandbox's pid namespace (2 under bubblewrap).
    pid: int
    #: The Python version (Python interpreters).
    python: str = ""
    #: ``time.time()`` when it started.
    started_at: float
    #: Top-level imports of the script that failed while warming up (the job itself
    #: reports them when it runs), as ``"line N: Error: message"``.
    warmup_errors: list[str] = msgspec.field(default_factory=list)
    #: Modules loaded once warm (``len(sys.modules)``; Bun: of ``require.cache``).
    modules: int = 0
    #: The runtime and its version, e.g. ``bun 1.2.3`` (other than Python).
    runtime: str = ""


class Done(msgspec.Struct, frozen=True, kw_only=True, tag="done", tag_field="t"):
    """The job's process ended and everything it started is gone."""

    job: str
    #: Its exit code, or ``-N`` when signal N killed it.
    status: int
    #: Its peak resident memory (``ru_maxrss``), KiB; 0 where not measured (a Bun job
    #: runs in its interpreter's process, whose peak is not the job's).
    maxrss_kb: int = 0
    #: The interpreter's own resident memory afterwards, KiB.
    rss_kb: int = 0
    #: Leftover processes of the job that had to be killed.
    swept: int = 0
    #: Why the interpreter must not serve another job (``uncaught``: an error escaped
    #: the job; ``globals``: the job changed a built-in or global it could not undo),
    #: empty when it may. The job's own outcome stands either way.
    retire: str = ""


ToInterpreter = Run | Kill | Stop
FromInterpreter = Ready | Done

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(FromInterpreter)


class ProtocolError(Exception):
    """The interpreter sent something that is not a frame of this protocol."""


def encode(frame: ToInterpreter) -> bytes:
    body = _encoder.encode(frame)
    return HEADER.pack(len(body)) + body


class FrameBuffer:
    """Bytes read from the interpreter, cut into frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[FromInterpreter]:
        """The frames completed by ``data``. Raises ``ProtocolError``."""
        self._buf += data
        frames: list[FromInterpreter] = []
        while len(self._buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buf)
            if size > MAX_FRAME_BYTES:
                raise ProtocolError(f"frame of {size} bytes announced")
            end = HEADER.size + size
            if len(self._buf) < end:
                break
            try:
                frames.append(_decoder.decode(bytes(self._buf[HEADER.size : end])))
            except msgspec.DecodeError as exc:
                raise ProtocolError(f"unreadable frame: {exc}") from exc
            del self._buf[:end]
        return frames
