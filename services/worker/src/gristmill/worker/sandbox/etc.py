"""The ``/etc`` a job sees: a few host files programs need, the rest written for it.

The host's ``/etc`` is never exposed as a whole (it holds ``shadow``, keys, service
configuration). A job gets:

* from the host, read-only, when they exist: the dynamic linker's cache, TLS trust
  anchors (``/etc/ssl/certs`` and ``openssl.cnf``, not ``/etc/ssl/private``), the
  ``alternatives`` links many ``/usr/bin`` commands resolve through, the time zone,
  ``services``/``protocols`` (port and protocol names), and, with host networking,
  ``resolv.conf`` and ``gai.conf`` so names resolve as on the host;
* written for it: ``passwd`` and ``group`` naming only ``root`` (whose files it
  sees), the job's own user and ``nobody``; ``nsswitch.conf`` (files, then DNS);
  ``hostname``; and ``hosts``: the host's entries (with host networking; a copy
  taken when the worker starts) or just ``localhost``, plus the job's host name.
"""

from __future__ import annotations

import os

import msgspec

__all__ = ["HostEtc", "host_etc", "synthesized"]

#: Host paths bound read-only into every job (those that exist).
_ALWAYS = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/pki/tls/certs",
    "/etc/pki/ca-trust/extracted",
    "/etc/alternatives",
    "/etc/timezone",
    "/etc/services",
    "/etc/protocols",
    "/etc/mime.types",
)
#: Only with host networking: name resolution as the host does it.
_NETWORK = ("/etc/resolv.conf", "/etc/gai.conf", "/etc/host.conf")
#: Symbolic links recreated as links (their targets live under ``/usr``).
_LINKS = ("/etc/localtime",)


class HostEtc(msgspec.Struct, frozen=True, kw_only=True):
    """What of the host's ``/etc`` exists here, found once when the sandbox is set up."""

    #: Files and directories to bind read-only at the same path.
    binds: tuple[str, ...] = ()
    #: ``(target, path)`` of symbolic links to recreate.
    links: tuple[tuple[str, str], ...] = ()
    #: The host's ``/etc/hosts`` (host networking only).
    hosts: str = ""


def host_etc(*, network: bool) -> HostEtc:
    """The host ``/etc`` entries a job gets (``network``: host networking)."""
    candidates = _ALWAYS + (_NETWORK if network else ())
    binds = tuple(path for path in candidates if os.path.exists(path))
    links = tuple(
        (os.readlink(path), path)
        for path in _LINKS
        if os.path.islink(path) and os.path.exists(path)
    )
    hosts = ""
    if network:
        try:
            with open("/etc/hosts", encoding="utf-8", errors="replace") as f:
                hosts = f.read()
        except OSError:
            hosts = ""
    return HostEtc(binds=binds, links=links, hosts=hosts)


def synthesized(*, uid: int, gid: int, home: str, hostname: str, host: HostEtc) -> dict[str, bytes]:
    """Path -> content of the files written for the job."""
    files = {
        "/etc/passwd": (
            "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
            f"gristmill:x:{uid}:{gid}:Gristmill job:{home}:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
        "/etc/group": f"root:x:0:\ngristmill:x:{gid}:\nnogroup:x:65534:\n",
        "/etc/nsswitch.conf": (
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
            "networks: files\nprotocols: files\nservices: files\n"
        ),
        "/etc/hostname": f"{hostname}\n",
    }
    hosts = host.hosts or "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    if not hosts.endswith("\n"):
        hosts += "\n"
    files["/etc/hosts"] = hosts + f"127.0.1.1\t{hostname}\n"
    return {path: content.encode() for path, content in files.items()}
