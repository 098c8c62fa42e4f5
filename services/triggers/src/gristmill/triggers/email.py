"""Email triggers: an SMTP server (aiosmtpd) whose accepted mail runs scripts and flows.

The server listens on ``GRISTMILL_SMTP_HOST``:``GRISTMILL_SMTP_PORT`` only when the port
is set. The conversation, and what each answer means:

* ``RCPT TO:<local[+key=value...]@domain>``: ``250`` when an enabled email trigger
  answers to ``local`` (see :mod:`gristmill.common.email_triggers`) and, if
  ``GRISTMILL_SMTP_DOMAIN`` is set, the domain is that one; ``550`` naming the address
  otherwise; ``451`` (try later) when the database cannot be reached. A *script
  address* needs no trigger: ``<workspace>.<script path with '.' for '/'>+<token>``
  (``main.u.alice.on_mail+<token>@domain``) runs that script on behalf of the token's
  user, if the token may use the workspace and the path; the token is never stored
  with the job nor shown to the script.
* ``DATA``: a message over ``GRISTMILL_SMTP_MAX_MESSAGE_BYTES`` is refused with ``552``
  (also at ``MAIL FROM`` when the client declares its ``SIZE``); a message that is not
  usable MIME (no header, a multipart without its boundaries, bad base64) with
  ``554 5.6.0`` saying what is wrong. Otherwise one run request per recipient is
  published, and ``250`` is answered only once every one of them is durable; when
  publishing fails the answer is ``451`` and the client retries.

A retried message makes no second run: the job id derives from the idempotency key
``email:<trigger path>:<Message-ID>`` (a digest of the message when it has no
Message-ID).

**Arguments** offered to the runnable (it gets those its input schema names; a
runnable with no schema gets ``raw_email`` and ``parsed_email``, as Windmill passes):
``parsed_email`` (``from``, ``to``, ``cc``, ``subject``, ``date``, ``message_id``,
``headers``, ``text_body``, ``html_body``, ``attachments``); each field of it at the
top level too, with ``sender`` for ``from`` (a Python parameter cannot be named
``from``); ``raw_email`` (the message as text); ``recipient`` (the envelope address
this run is for); ``mail_from`` (the envelope sender); ``email_extra_args`` (the
``+key=value`` pairs of the address). An attachment is ``{filename, content_type,
size, content_base64}``. Text and HTML bodies have ``\n`` line ends (the wire's
``\r\n`` are turned into ``\n``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from email import errors as email_errors
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any, Final

import asyncpg
import msgspec
import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from gristmill.common import email_triggers, scripts
from gristmill.common.contracts.runs import RunRequest, TriggerKind
from gristmill.common.errors import InvalidRequest
from gristmill.common.runs import idempotent_job_id
from gristmill.common.tokens import lookup_token
from gristmill.common.variables import may_access
from gristmill.triggers import runnables
from gristmill.triggers.service import TriggerContext

__all__ = [
    "EmailSource",
    "MalformedMessage",
    "Target",
    "parse_email",
    "resolve",
    "split_address",
]

_log = structlog.get_logger(__name__)
_parser = BytesParser(policy=policy.default)
_json = msgspec.json.Encoder()
#: Defects that leave a message without a trustworthy structure or content.
_FATAL_DEFECTS: Final = (
    email_errors.NoBoundaryInMultipartDefect,
    email_errors.StartBoundaryNotFoundDefect,
    email_errors.MultipartInvariantViolationDefect,
    email_errors.InvalidBase64CharactersDefect,
    email_errors.InvalidBase64PaddingDefect,
    email_errors.InvalidBase64LengthDefect,
)
_DB_ERRORS: Final = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


class MalformedMessage(ValueError):
    """The message cannot be turned into arguments; the text says why."""


def split_address(address: str) -> tuple[str, str, dict[str, str]]:
    """``(local part, domain, extra args)`` of ``local+key=value@domain``, lower-cased
    local part and domain (a ``+word`` without ``=`` is the extra arg ``word: ""``)."""
    local, _, domain = address.strip().strip("<>").rpartition("@")
    base, *extras = local.split("+")
    extra_args: dict[str, str] = {}
    for item in extras:
        key, sep, value = item.partition("=")
        if key:
            extra_args[key] = value if sep else ""
    return base.lower(), domain.lower(), extra_args


@dataclass(frozen=True, slots=True)
class Target:
    """What mail to one recipient runs, on whose behalf."""

    workspace: str
    is_flow: bool
    path: str
    requested_by: str
    #: The trigger's path, or ``<workspace>.<dotted script path>`` for a token address.
    source: str
    #: The recipient as shown to the runnable and kept with the job (no token in it).
    recipient: str
    extra_args: dict[str, str]


async def resolve(pool: asyncpg.Pool, address: str) -> Target | None:
    """The target of a recipient: an enabled email trigger's address, or a script
    address ``<workspace>.<script path, '/' as '.'>+<token>`` whose token may run it."""
    local, domain, extra_args = split_address(address)
    trigger = await email_triggers.by_address(pool, local)
    if trigger is not None:
        return Target(
            workspace=trigger.workspace_id,
            is_flow=trigger.is_flow,
            path=trigger.script_path,
            requested_by=trigger.edited_by,
            source=trigger.path,
            recipient=address,
            extra_args=extra_args,
        )
    workspace, dot, dotted = local.partition(".")
    tokens = [key for key, value in extra_args.items() if not value]
    if not dot or not tokens:
        return None
    path = dotted.replace(".", "/")
    token = tokens[0]
    try:
        scripts.validate_path(path)
    except InvalidRequest:
        return None
    info = await lookup_token(pool, token)
    if (
        info is None
        or (info.workspace is not None and info.workspace != workspace)
        or not may_access(path, user_id=info.user_id, is_admin=info.is_admin)
        or not await scripts.exists_path(pool, workspace, path)
    ):
        return None
    extra_args = {key: value for key, value in extra_args.items() if key != token}
    return Target(
        workspace=workspace,
        is_flow=False,
        path=path,
        requested_by=info.user_id,
        source=f"{workspace}.{dotted}",
        recipient=f"{local}@{domain}",
        extra_args=extra_args,
    )


def _text_of(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]  # EmailMessage under policy.default
    except (LookupError, ValueError):  # an unknown or lying charset
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    if not isinstance(content, str):
        return ""
    return content.replace("\r\n", "\n").replace("\x00", "\ufffd")


def _headers(message: Message) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    for name, value in message.items():
        text = str(value)
        if name in headers:
            previous = headers[name]
            headers[name] = [*previous, text] if isinstance(previous, list) else [previous, text]
        else:
            headers[name] = text
    return headers


def parse_email(raw: bytes) -> dict[str, Any]:
    """The ``parsed_email`` argument of a message; ``MalformedMessage`` if unusable."""
    message = _parser.parsebytes(raw)
    assert isinstance(message, EmailMessage)  # policy.default makes EmailMessages
    if not message.keys():
        raise MalformedMessage("the message has no header fields (RFC 5322)")
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    bodies = {id(part) for part in (text_part, html_part) if part is not None}
    attachments: list[dict[str, Any]] = []
    for part in message.walk():
        if part.is_multipart() or id(part) in bodies:
            continue
        if part is message and part.get_content_maintype() == "text":
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        attachments.append(
            {
                "filename": part.get_filename(),
                "content_type": part.get_content_type(),
                "size": len(data),
                "content_base64": base64.b64encode(data).decode("ascii"),
            }
        )
    for part in message.walk():
        for defect in part.defects:
            if isinstance(defect, _FATAL_DEFECTS):
                raise MalformedMessage(f"{type(defect).__name__}: {defect}")
    return {
        "from": str(message.get("From", "")),
        "to": str(message.get("To", "")),
        "cc": str(message.get("Cc", "")),
        "subject": str(message.get("Subject", "")),
        "date": str(message.get("Date", "")),
        "message_id": str(message.get("Message-ID", "")).strip() or None,
        "headers": _headers(message),
        "text_body": _text_of(text_part) if text_part is not None else None,
        "html_body": _text_of(html_part) if html_part is not None else None,
        "attachments": attachments,
    }


class _Handler:
    """aiosmtpd's hooks: RCPT checks the address, DATA publishes the runs."""

    def __init__(self, source: EmailSource) -> None:
        self._source = source

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        local, domain, _ = split_address(address)
        wanted = self._source.domain
        if wanted is not None and domain != wanted:
            return f"550 5.7.1 <{local}@{domain}>: this server accepts mail for @{wanted} only"
        try:
            target = await resolve(self._source.context.pool, address)
        except _DB_ERRORS as exc:
            _log.warning("email trigger lookup failed", error=str(exc))
            return "451 4.3.0 Temporary failure looking up the address; try again later"
        if target is None:
            return f"550 5.1.1 <{local}@{domain}>: no email trigger answers to this address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        try:
            parsed = await asyncio.to_thread(parse_email, raw)  # large mail: off the loop
        except MalformedMessage as exc:
            return f"554 5.6.0 Malformed message: {exc}"
        except Exception as exc:  # the parser's own failure must not end the session
            _log.warning("email could not be parsed", error=repr(exc))
            return f"554 5.6.0 The message could not be parsed: {type(exc).__name__}"
        try:
            requests = await self._source.requests(envelope, raw, parsed)
        except _DB_ERRORS as exc:
            _log.warning("email trigger lookup failed", error=str(exc))
            return "451 4.3.0 Temporary failure; try again later"
        except runnables.RunFailed as exc:
            return f"552 5.3.4 {exc.message}"
        if not requests:
            return "550 5.1.1 No recipient answers to an email trigger any more"
        try:
            await runnables.publish(self._source.context, requests)
        except Exception as exc:  # nothing is acknowledged: the client retries
            _log.warning("email runs could not be published", error=repr(exc))
            return "451 4.3.0 The message could not be queued; try again later"
        jobs = " ".join(str(item.job_id) for item in requests)
        return f"250 2.0.0 OK: queued as {jobs}"


class EmailSource:
    """Serves SMTP while ``stop`` is not set (idle when no port is configured)."""

    kind = "email"

    def __init__(self, context: TriggerContext) -> None:
        self.context = context
        settings = context.settings
        self.domain = settings.smtp_domain.strip().lower() if settings.smtp_domain else None
        self._schemas = runnables.SchemaCache(context)

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.context.settings
        if settings.smtp_port is None:
            await stop.wait()
            return
        # aiosmtpd logs every command and address at INFO: keep its warnings only.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
        handler = _Handler(self)
        hostname = self.domain or "gristmill"

        def protocol() -> SMTP:
            return SMTP(
                handler,
                data_size_limit=settings.smtp_max_message_bytes,
                enable_SMTPUTF8=True,
                hostname=hostname,
                ident="Gristmill ESMTP",
                # Mail is accepted without authentication: offer none.
                auth_exclude_mechanism=["LOGIN", "PLAIN"],
                loop=loop,
            )

        server = await loop.create_server(protocol, settings.smtp_host, settings.smtp_port)
        _log.info(
            "smtp server listening",
            host=settings.smtp_host,
            port=settings.smtp_port,
            domain=self.domain,
        )
        try:
            await stop.wait()
        finally:
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), timeout=5)

    async def requests(
        self, envelope: Envelope, raw: bytes, parsed: dict[str, Any]
    ) -> list[RunRequest]:
        """One run request per recipient still answered by a trigger."""
        made: list[RunRequest] = []
        limit = self.context.settings.max_args_bytes
        digest = hashlib.sha256(raw).hexdigest()
        for address in dict.fromkeys(envelope.rcpt_tos):
            target = await resolve(self.context.pool, address)
            if target is None:
                continue
            args = await self._args(target, envelope, raw, parsed)
            size = len(_json.encode(args))
            if size > limit:
                raise runnables.RunFailed(
                    f"the message is too large for a run's arguments ({size} bytes encoded, "
                    f"limit {limit})"
                )
            key = f"email:{target.source}:{parsed['message_id'] or 'sha256:' + digest}"
            made.append(
                runnables.request(
                    workspace=target.workspace,
                    is_flow=target.is_flow,
                    path=target.path,
                    args=args,
                    requested_by=target.requested_by,
                    kind=TriggerKind.EMAIL,
                    source=target.source,
                    idempotency_key=key,
                    job_id=idempotent_job_id(target.workspace, key),
                    meta={
                        "email": {"recipient": target.recipient, "mail_from": envelope.mail_from}
                    },
                )
            )
        return made

    async def _args(
        self, target: Target, envelope: Envelope, raw: bytes, parsed: dict[str, Any]
    ) -> dict[str, Any]:
        candidates: dict[str, Any] = {
            "raw_email": raw.decode("utf-8", "replace").replace("\x00", "\ufffd"),
            "parsed_email": parsed,
            "recipient": target.recipient,
            "mail_from": envelope.mail_from,
            "sender": parsed["from"],
        }
        if target.extra_args:
            candidates["email_extra_args"] = target.extra_args
        for name, value in parsed.items():
            if name != "from":
                candidates.setdefault(name, value)
        schema = await self._schemas.get(target.workspace, target.is_flow, target.path)
        return runnables.fit_args(schema, candidates, ("raw_email", "parsed_email"))
