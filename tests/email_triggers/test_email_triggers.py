"""Email triggers against a real ``gristmill up`` with its SMTP server, driven by ``smtplib``."""

from __future__ import annotations

import asyncio
import os
import smtplib
from email import policy
from email.message import EmailMessage
from typing import Any

import asyncpg
import httpx
import pytest

from gristmill.common.db.pool import create_pool
from gristmill.common.tokens import create_token
from gristmill.triggers.email import parse_email, split_address
from tests.email_triggers.conftest import DOMAIN, MAX_MESSAGE_BYTES, Mailhost
from tests.harness.services import wait_until
from tests.scripts.standalone import TOKEN

READER = """
import base64

def main(subject: str, text_body: str, html_body: str, attachments: list, sender: str,
         recipient: str, message_id: str, email_extra_args: dict = None):
    return {
        'subject': subject, 'text': text_body, 'html': html_body, 'sender': sender,
        'recipient': recipient, 'message_id': message_id, 'extra': email_extra_args,
        'files': [
            {'name': a['filename'], 'type': a['content_type'], 'size': a['size'],
             'hex': base64.b64decode(a['content_base64']).hex()}
            for a in attachments
        ],
    }
"""
PLAIN = "def main(subject: str):\n    return subject\n"
WINDMILL_STYLE = (
    "def main(raw_email: str, parsed_email: dict):\n    return parsed_email['subject']\n"
)


def _script(api: httpx.Client, path: str, content: str) -> None:
    response = api.post(
        "/api/w/main/scripts/create",
        json={"path": path, "content": content, "language": "python3", "summary": ""},
    )
    assert response.status_code == 201, response.text


def _trigger(api: httpx.Client, path: str, **fields: Any) -> httpx.Response:
    return api.post("/api/w/main/email_triggers/create", json={"path": path} | fields)


def _created(api: httpx.Client, path: str, local_part: str, script_path: str, **more: Any) -> None:
    response = _trigger(api, path, local_part=local_part, script_path=script_path, **more)
    assert response.status_code == 201, response.text


def _message(to: str, subject: str, **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Ada <ada@example.org>"
    message["To"] = to
    message["Subject"] = subject
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    return message


def _send(mailhost: Mailhost, message: bytes | EmailMessage, rcpts: list[str]) -> tuple[int, str]:
    """MAIL, RCPT (each must pass), DATA: DATA's reply."""
    data = message if isinstance(message, bytes) else message.as_bytes(policy=policy.SMTP)
    with smtplib.SMTP("127.0.0.1", mailhost.smtp_port, timeout=30) as client:
        client.ehlo("tests.local")
        code, reply = client.mail("ada@example.org")
        assert code == 250, reply
        for rcpt in rcpts:
            code, reply = client.rcpt(rcpt)
            assert code == 250, (rcpt, code, reply)
        code, reply = client.data(data)
        return code, reply.decode()


def _job_id(reply: tuple[int, str]) -> str:
    code, text = reply
    assert code == 250, text
    return text.rsplit(" ", 1)[-1]


async def _outcome(db: asyncpg.Pool, job_id: str) -> asyncpg.Record:
    async def ended() -> asyncpg.Record | None:
        row: asyncpg.Record | None = await db.fetchrow(
            "SELECT c.status, c.result, c.error, j.trigger_kind, j.trigger_source "
            "FROM jobs_completed c JOIN jobs j ON j.id = c.id WHERE c.id = $1::uuid",
            job_id,
        )
        return row

    return await wait_until(ended, timeout=60, what=f"job {job_id}")


async def test_a_mail_with_an_attachment_runs_the_script(
    api: httpx.Client, db: asyncpg.Pool, mailhost: Mailhost
) -> None:
    _script(api, "u/admin/mail_reader", READER)
    _created(api, "u/admin/mail_orders", "Orders", "u/admin/mail_reader")
    attachment = os.urandom(5000)
    message = _message(f"orders+source=shop+rush@{DOMAIN}", "Order 42 ✓", Message_ID="<o42@ex>")
    message.set_content("Hello,\nplease ship order 42.\n")
    message.add_alternative("<p>Please ship <b>order 42</b>.</p>", subtype="html")
    message.add_attachment(
        attachment, maintype="application", subtype="pdf", filename="invoice 42.pdf"
    )
    reply = await asyncio.to_thread(_send, mailhost, message, [f"orders+source=shop+rush@{DOMAIN}"])
    row = await _outcome(db, _job_id(reply))
    assert (row["status"], row["trigger_kind"], row["trigger_source"]) == (
        "success",
        "email",
        "u/admin/mail_orders",
    ), row["error"]
    result = row["result"]
    assert result["subject"] == "Order 42 ✓"
    assert result["text"] == "Hello,\nplease ship order 42.\n"
    assert result["html"] == "<p>Please ship <b>order 42</b>.</p>\n"
    assert result["sender"] == "Ada <ada@example.org>"
    assert result["recipient"] == f"orders+source=shop+rush@{DOMAIN}"
    assert result["message_id"] == "<o42@ex>"
    assert result["extra"] == {"source": "shop", "rush": ""}
    assert result["files"] == [
        {
            "name": "invoice 42.pdf",
            "type": "application/pdf",
            "size": len(attachment),
            "hex": attachment.hex(),
        }
    ]

    # The same message again (a client retrying after a lost reply) makes no second run.
    again = await asyncio.to_thread(_send, mailhost, message, [f"orders@{DOMAIN}"])
    assert _job_id(again) == _job_id(reply)
    count = await db.fetchval(
        "SELECT count(*) FROM jobs WHERE trigger_source = 'u/admin/mail_orders'"
    )
    assert count == 1


async def test_windmill_style_arguments_and_workspaced_addresses(
    api: httpx.Client, db: asyncpg.Pool, mailhost: Mailhost
) -> None:
    _script(api, "u/admin/mail_windmill", WINDMILL_STYLE)
    _created(api, "u/admin/mail_ws", "inbox", "u/admin/mail_windmill", workspaced_local_part=True)
    assert api.get("/api/w/main/email_triggers/get/u/admin/mail_ws").json()["address"] == (
        "main-inbox"
    )
    message = _message(f"main-inbox@{DOMAIN}", "windmill style")
    message.set_content("body")
    reply = await asyncio.to_thread(_send, mailhost, message, [f"MAIN-Inbox@{DOMAIN.upper()}"])
    row = await _outcome(db, _job_id(reply))
    assert (row["status"], row["result"]) == ("success", "windmill style"), row["error"]


async def test_a_script_address_with_a_token_runs_the_script(
    api: httpx.Client, db: asyncpg.Pool, mailhost: Mailhost
) -> None:
    _script(
        api,
        "u/admin/mail_direct",
        "def main(subject: str, recipient: str):\n    return [subject, recipient]\n",
    )
    other = await _user_token(mailhost, "mallory")
    address = f"main.u.admin.mail_direct+{TOKEN}+tag=1@{DOMAIN}"
    for bad in (
        f"main.u.admin.mail_direct+wrong-token@{DOMAIN}",  # unknown token
        f"main.u.admin.mail_direct+{other}@{DOMAIN}",  # may not use u/admin/...
        f"main.u.admin.no_such_script+{TOKEN}@{DOMAIN}",
        f"main.u.admin.mail_direct@{DOMAIN}",  # no token
    ):
        code, _ = await asyncio.to_thread(_refused_rcpt, mailhost, bad)
        assert code == 550, bad
    message = _message(address, "direct")
    message.set_content("hi")
    reply = await asyncio.to_thread(_send, mailhost, message, [address])
    job_id = _job_id(reply)
    row = await _outcome(db, job_id)
    recipient = f"main.u.admin.mail_direct@{DOMAIN}"
    assert (row["status"], row["result"]) == ("success", ["direct", recipient]), row["error"]
    assert row["trigger_source"] == "main.u.admin.mail_direct"
    stored = await db.fetchrow(
        "SELECT args, meta, created_by FROM jobs WHERE id = $1::uuid", job_id
    )
    assert stored["created_by"] == "admin"
    assert TOKEN not in str(stored["args"]) + str(stored["meta"])


async def _user_token(mailhost: Mailhost, user: str) -> str:
    pool = await create_pool(mailhost.database_url, min_size=1, max_size=1)
    try:
        await pool.execute(
            "INSERT INTO users (id, is_admin) VALUES ($1, false) ON CONFLICT DO NOTHING", user
        )
        return await create_token(pool, user_id=user)
    finally:
        await pool.close()


def _refused_rcpt(mailhost: Mailhost, rcpt: str) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", mailhost.smtp_port, timeout=30) as client:
        client.ehlo("tests.local")
        client.mail("ada@example.org")
        code, reply = client.rcpt(rcpt)
        return code, reply.decode()


def _raw_data(mailhost: Mailhost, rcpt: str, data: bytes, declare_size: bool) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", mailhost.smtp_port, timeout=30) as client:
        client.ehlo("tests.local")
        options = [f"SIZE={len(data)}"] if declare_size else []
        code, reply = client.mail("ada@example.org", options)
        if code != 250:
            return code, reply.decode()
        assert client.rcpt(rcpt)[0] == 250
        code, reply = client.data(data)
        return code, reply.decode()


async def test_unknown_recipients_oversized_and_malformed_mail_are_refused(
    api: httpx.Client, db: asyncpg.Pool, mailhost: Mailhost
) -> None:
    _script(api, "u/admin/mail_plain", PLAIN)
    _created(api, "u/admin/mail_plain", "plain", "u/admin/mail_plain")
    rcpt = f"plain@{DOMAIN}"

    code, reply = await asyncio.to_thread(_refused_rcpt, mailhost, f"nobody@{DOMAIN}")
    assert code == 550
    assert f"nobody@{DOMAIN}" in reply
    code, reply = await asyncio.to_thread(_refused_rcpt, mailhost, "plain@elsewhere.example")
    assert code == 550
    assert DOMAIN in reply

    big = _message(rcpt, "too big")
    big.set_content("x" * 100 + "\n")
    big.add_attachment(os.urandom(MAX_MESSAGE_BYTES), maintype="application", subtype="zip")
    data = big.as_bytes(policy=policy.SMTP)
    for declare_size in (True, False):  # refused at MAIL FROM (SIZE=...) or after DATA
        code, reply = await asyncio.to_thread(_raw_data, mailhost, rcpt, data, declare_size)
        assert code == 552, (declare_size, reply)
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        await asyncio.to_thread(_sendmail, mailhost, rcpt, data)
    assert refused.value.smtp_code == 552

    no_boundary = (
        b"From: ada@example.org\r\nTo: " + rcpt.encode() + b"\r\nSubject: broken\r\n"
        b'Content-Type: multipart/mixed; boundary="never-used"\r\n\r\n'
        b"there is no boundary line here\r\n"
    )
    bad_base64 = (
        b"From: ada@example.org\r\nSubject: bad attachment\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nhi\r\n--b\r\n"
        b'Content-Type: application/octet-stream; name="x.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nnot*base64*at*all!\r\n--b--\r\n"
    )
    for data in (no_boundary, bad_base64, b"\x00\xff\xfe garbage without headers\r\n"):
        code, reply = await asyncio.to_thread(_raw_data, mailhost, rcpt, data, False)
        assert code == 554, (data[:40], reply)
        assert "Malformed message" in reply

    # The server is still serving: the next mail runs.
    good = _message(rcpt, "still here")
    good.set_content("ok")
    reply_ok = await asyncio.to_thread(_send, mailhost, good, [rcpt])
    row = await _outcome(db, _job_id(reply_ok))
    assert (row["status"], row["result"]) == ("success", "still here"), row["error"]
    mailhost.process.assert_alive()

    # A disabled trigger's address is unknown.
    response = api.post(
        "/api/w/main/email_triggers/setenabled/u/admin/mail_plain", json={"enabled": False}
    )
    assert response.status_code == 200, response.text
    code, _ = await asyncio.to_thread(_refused_rcpt, mailhost, rcpt)
    assert code == 550


def _sendmail(mailhost: Mailhost, rcpt: str, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", mailhost.smtp_port, timeout=30) as client:
        client.sendmail("ada@example.org", [rcpt], data)


def test_api_crud_and_validation(api: httpx.Client) -> None:
    _script(api, "u/admin/mail_crud", PLAIN)
    base = "/api/w/main/email_triggers"
    for fields, status, where in (
        ({"local_part": "has+plus"}, 400, "local_part"),
        ({"local_part": "bad@at"}, 400, "local_part"),
        ({"local_part": ""}, 400, "local_part"),
        ({"local_part": "x" * 65}, 400, "local_part"),
        ({"script_path": "u/admin/missing"}, 404, "script_path"),
        ({"mode": "maybe"}, 400, "mode"),
    ):
        body = {"local_part": "crud", "script_path": "u/admin/mail_crud"} | fields
        response = _trigger(api, "u/admin/mail_crud_bad", **body)
        assert response.status_code == status, (fields, response.text)
        assert response.json()["error"]["location"] == where, response.text
    assert api.get(f"{base}/exists/u/admin/mail_crud_bad").json() is False

    _created(api, "u/admin/mail_crud", "Crud.Box", "u/admin/mail_crud", mode="disabled")
    taken = _trigger(
        api, "u/admin/mail_crud2", local_part="crud.box", script_path="u/admin/mail_crud"
    )
    assert taken.status_code == 409, taken.text
    assert taken.json()["error"]["location"] == "local_part"
    got = api.get(f"{base}/get/u/admin/mail_crud").json()
    assert (got["local_part"], got["address"], got["enabled"], got["mode"]) == (
        "crud.box",
        "crud.box",
        False,
        "disabled",
    )
    assert api.get(f"{base}/exists/u/admin/mail_crud").json() is True
    response = api.post(
        f"{base}/update/u/admin/mail_crud",
        json={"local_part": "crud2", "script_path": "u/admin/mail_crud", "enabled": True},
    )
    assert response.status_code == 200, response.text
    got = api.get(f"{base}/get/u/admin/mail_crud").json()
    assert (got["address"], got["enabled"]) == ("crud2", True)
    assert "u/admin/mail_crud" in [item["path"] for item in api.get(f"{base}/list").json()]
    assert api.delete(f"{base}/delete/u/admin/mail_crud").status_code == 200
    assert api.get(f"{base}/get/u/admin/mail_crud").status_code == 404


def test_parsing_and_addresses() -> None:
    assert split_address("<Orders+a=1+b@Mail.Example>") == (
        "orders",
        "mail.example",
        {"a": "1", "b": ""},
    )
    message = EmailMessage()
    message["Subject"] = "s"
    message["Received"] = "one"
    message["Received"] = "two"
    message.set_content("only text")
    parsed = parse_email(message.as_bytes())
    assert parsed["text_body"] == "only text\n"
    assert parsed["html_body"] is None
    assert parsed["attachments"] == []
    assert parsed["headers"]["Received"] == ["one", "two"]
