"""The script registry over HTTP, on a real ``gristmill up``: Windmill's ``/scripts`` paths."""

from __future__ import annotations

from typing import Any

import httpx

from tests.scripts.standalone import Standalone

CODE = "def main(name: str, times: int = 1):\n    return name * times\n"
#: Fields Windmill's ``Script`` object requires.
SCRIPT_FIELDS = {
    "hash",
    "path",
    "summary",
    "description",
    "content",
    "created_by",
    "created_at",
    "archived",
    "deleted",
    "is_template",
    "extra_perms",
    "language",
    "kind",
    "starred",
    "no_main_func",
    "has_preprocessor",
}


def create(client: httpx.Client, path: str, content: str = CODE, **fields: Any) -> httpx.Response:
    body = {
        "path": path,
        "content": content,
        "language": "python3",
        "summary": "",
        "description": "",
    }
    return client.post("/api/w/main/scripts/create", json=body | fields)


def created(client: httpx.Client, path: str, content: str = CODE, **fields: Any) -> str:
    response = create(client, path, content, **fields)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_create_and_read_back(gristmill: httpx.Client) -> None:
    digest = created(gristmill, "u/admin/api_read", summary="Repeat", lock=["a==1", "b==2"])
    assert len(digest) == 16
    by_path = gristmill.get("/api/w/main/scripts/get/p/u/admin/api_read")
    assert by_path.status_code == 200
    script = by_path.json()
    assert set(script) >= SCRIPT_FIELDS
    assert script["hash"] == digest
    assert script["path"] == "u/admin/api_read"
    assert script["summary"] == "Repeat"
    assert script["language"] == "python3"
    assert script["kind"] == "script"
    assert script["created_by"] == "admin"
    assert script["lock"] == "a==1\nb==2"
    assert script["parent_hashes"] == []
    assert (script["archived"], script["deleted"]) == (False, False)
    assert script["schema"]["properties"] == {
        "name": {"type": "string"},
        "times": {"type": "integer", "default": 1},
    }
    assert script["schema"]["required"] == ["name"]
    assert gristmill.get(f"/api/w/main/scripts/get/h/{digest}").json() == script
    raw = gristmill.get("/api/w/main/scripts/raw/p/u/admin/api_read")
    assert raw.text == CODE
    assert gristmill.get("/api/w/main/scripts/exists/p/u/admin/api_read").json() is True
    assert gristmill.get("/api/w/main/scripts/exists/p/u/admin/api_none").json() is False


def test_versions_and_conflicts(gristmill: httpx.Client) -> None:
    first = created(gristmill, "f/api/chain")
    second = created(gristmill, "f/api/chain", CODE + "# v2\n", parent_hash=first)
    # Saving the same thing again is a no-op answering the same hash.
    assert created(gristmill, "f/api/chain", CODE + "# v2\n", parent_hash=first) == second
    stale = create(gristmill, "f/api/chain", CODE + "# v3\n", parent_hash=first)
    assert stale.status_code == 409
    error = stale.json()["error"]
    assert error["code"] == "conflict"
    assert error["location"] == "parent_hash"
    assert error["data"] == {"latest": second}
    assert second in error["message"]
    script = gristmill.get("/api/w/main/scripts/get/p/f/api/chain").json()
    assert (script["hash"], script["parent_hashes"]) == (second, [first])


def test_bad_saves_are_rejected_with_the_field_at_fault(gristmill: httpx.Client) -> None:
    bad_path = create(gristmill, "scripts/hello")
    assert bad_path.status_code == 400
    assert bad_path.json()["error"]["location"] == "path"
    assert "u/<user>/<name> or f/<folder>/<name>" in bad_path.json()["error"]["message"]
    bad_language = create(gristmill, "u/admin/api_bad", language="cobol")
    assert bad_language.status_code == 400
    assert bad_language.json()["error"] == {
        "code": "invalid_request",
        "message": "unsupported language 'cobol'; supported: "
        "bash, bun, deno, go, nativets, postgresql, python3",
        "location": "language",
    }
    syntax = create(gristmill, "u/admin/api_bad", "def main(x: int)\n    return x\n")
    assert syntax.status_code == 400
    assert syntax.json()["error"]["location"] == "line 1, column 17"
    missing = gristmill.post("/api/w/main/scripts/create", json={"path": "u/admin/api_bad"})
    assert missing.status_code == 400
    assert "content" in missing.text
    assert gristmill.get("/api/w/main/scripts/exists/p/u/admin/api_bad").json() is False
    unknown = gristmill.get("/api/w/main/scripts/get/p/u/admin/api_bad")
    assert unknown.status_code == 404
    assert "u/admin/api_bad" in unknown.json()["error"]["message"]
    assert gristmill.get("/api/w/main/scripts/get/h/0123456789abcdef").status_code == 404


def test_list_filters_and_pages(gristmill: httpx.Client) -> None:
    created(gristmill, "f/lists/a")
    a2 = created(gristmill, "f/lists/a", CODE + "# v2\n")
    b = created(gristmill, "f/lists/b")
    c = created(gristmill, "f/lists/c", is_template=True)

    def listed(**params: Any) -> list[str]:
        response = gristmill.get(
            "/api/w/main/scripts/list", params={"path_start": "f/lists/"} | params
        )
        assert response.status_code == 200, response.text
        return [script["hash"] for script in response.json()]

    assert listed() == [c, b, a2]
    assert listed(order_desc=False) == [a2, b, c]
    assert listed(per_page=2) + listed(per_page=2, page=2) == [c, b, a2]
    assert listed(path_exact="f/lists/b") == [b]
    assert listed(created_by="admin") == [c, b, a2]
    assert listed(created_by="nobody") == []
    assert listed(is_template=True) == [c]
    assert listed(kinds="script,failure") == [c, b, a2]
    assert listed(first_parent_hash=listed(path_exact="f/lists/a")[0]) == []
    paths = gristmill.get("/api/w/main/scripts/list_paths").json()
    assert {"f/lists/a", "f/lists/b", "f/lists/c"} <= set(paths)
    assert gristmill.get("/api/w/main/scripts/list", params={"page": 0}).status_code == 400


def test_archive(gristmill: httpx.Client) -> None:
    v1 = created(gristmill, "f/archive/x")
    v2 = created(gristmill, "f/archive/x", CODE + "# v2\n")
    response = gristmill.post("/api/w/main/scripts/archive/p/f/archive/x")
    assert (response.status_code, response.text) == (200, "f/archive/x")
    live = gristmill.get("/api/w/main/scripts/list", params={"path_start": "f/archive/"}).json()
    assert live == []
    archived = gristmill.get(
        "/api/w/main/scripts/list", params={"path_start": "f/archive/", "show_archived": True}
    ).json()
    assert [script["hash"] for script in archived] == [v2]
    latest = gristmill.get("/api/w/main/scripts/get/p/f/archive/x").json()
    assert (latest["hash"], latest["archived"]) == (v2, True)
    one = gristmill.post(f"/api/w/main/scripts/archive/h/{v1}")
    assert one.status_code == 200
    assert (one.json()["hash"], one.json()["archived"]) == (v1, True)
    assert gristmill.post("/api/w/main/scripts/archive/p/f/archive/none").status_code == 404


async def test_delete(gristmill: httpx.Client, standalone: Standalone) -> None:
    v1 = created(gristmill, "f/delete/x")
    v2 = created(gristmill, "f/delete/x", CODE + "# v2\n")
    one = gristmill.post(f"/api/w/main/scripts/delete/h/{v2}")
    assert one.status_code == 200
    assert (one.json()["hash"], one.json()["deleted"], one.json()["content"]) == (v2, True, "")
    assert gristmill.get("/api/w/main/scripts/get/p/f/delete/x").json()["hash"] == v1
    # Deleting needs an admin.
    token = await standalone.token_for("bob")
    as_bob = {"Authorization": f"Bearer {token}"}
    refused = gristmill.post("/api/w/main/scripts/delete/p/f/delete/x", headers=as_bob)
    assert refused.status_code == 403
    assert "admin" in refused.json()["error"]["message"]
    assert gristmill.post(f"/api/w/main/scripts/delete/h/{v1}", headers=as_bob).status_code == 403
    # ... saving does not.
    with httpx.Client(base_url=standalone.base_url, headers=as_bob) as bob:
        assert create(bob, "u/bob/mine").status_code == 201
    gone = gristmill.post("/api/w/main/scripts/delete/p/f/delete/x")
    assert (gone.status_code, gone.json()) == (200, "f/delete/x")
    assert gristmill.get("/api/w/main/scripts/exists/p/f/delete/x").json() is False
    assert gristmill.get(f"/api/w/main/scripts/get/h/{v1}").status_code == 404
    assert gristmill.post("/api/w/main/scripts/delete/p/f/delete/x").status_code == 404
    assert await standalone.fetchval("SELECT count(*) FROM scripts WHERE path = 'f/delete/x'") == 0
