"""Hostile and malformed input: every case is a 4xx problem+json and leaves nothing stored."""

from __future__ import annotations

import os

LIMIT = 256 * 1024  # the suite's upload limit (see conftest)


async def assert_nothing_stored(svc) -> None:
    for table in ("documents", "document_versions", "blobs", "outbox"):
        assert await svc.count(table) == 0, table


async def test_oversize_upload_is_rejected_while_streaming(svc):
    client_id, project_id = await svc.known_project()
    pulled = 0
    boundary = "xyzBOUNDARY"

    async def body():
        nonlocal pulled
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\nBig\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.md"\r\n'
            "Content-Type: text/markdown\r\n\r\n"
        ).encode()
        yield head
        chunk = b"a" * 65536
        for _ in range(800):  # 50 MB if anyone read it all
            pulled += len(chunk)
            yield chunk

    r = await svc.http.post(
        f"/v1/projects/{project_id}/documents",
        content=body(),
        headers={**svc.user(client_id), "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    body_ = svc.problem(r, 413, "upload_too_large")
    assert body_["limit_bytes"] == LIMIT
    # Refused as soon as the limit was crossed, not after reading 50 MB.
    assert pulled <= LIMIT + 2 * 65536
    await assert_nothing_stored(svc)


async def test_declared_oversize_is_rejected_before_reading(svc):
    client_id, project_id = await svc.known_project()
    pulled = 0

    async def body():
        nonlocal pulled
        for _ in range(100):
            pulled += 65536
            yield b"a" * 65536

    r = await svc.http.post(
        f"/v1/projects/{project_id}/documents",
        content=body(),
        headers={
            **svc.user(client_id),
            "Content-Type": "multipart/form-data; boundary=b",
            "Content-Length": str(100 * 1024 * 1024),
        },
    )
    svc.problem(r, 413)
    assert pulled == 0
    await assert_nothing_stored(svc)


async def test_oversize_json_content_is_rejected(svc):
    client_id, project_id = await svc.known_project()
    r = await svc.upload_md(project_id, "é" * (LIMIT // 2 + 10), svc.user(client_id))
    svc.problem(r, 413, "upload_too_large")
    await assert_nothing_stored(svc)


BAD_CONTENT = [
    (b"\x89PNG\r\n\x1a\n" + os.urandom(200), "logo.png", "image/png", 415, "unsupported_content"),
    (b"PK\x03\x04" + os.urandom(200), "doc.docx", "application/octet-stream", 415, "unsupported_content"),
    (b"", "empty.md", "text/markdown", 422, "empty_content"),
    (b"   \n\t\n  ", "blank.md", "text/markdown", 422, "empty_content"),
    # Binary renamed .md and declared Markdown: NUL bytes, invalid UTF-8, control characters.
    (bytes(range(256)) * 4, "readme.md", "text/markdown", 415, "unsupported_content"),
    ("résumé".encode("latin-1") * 50, "latin1.md", "text/markdown", 415, "unsupported_content"),
    (
        b"# Title\n" + b"\x01\x02\x03\x04\x05\x06" * 200,
        "ctrl.md",
        "text/markdown",
        415,
        "unsupported_content",
    ),
]


async def test_bad_content_is_refused(svc):
    client_id, project_id = await svc.known_project()
    for data, filename, declared, status, code in BAD_CONTENT:
        r = await svc.upload_file(
            project_id, data, svc.user(client_id), filename=filename, content_type=declared
        )
        svc.problem(r, status, code)
    await assert_nothing_stored(svc)


async def test_request_type_other_than_multipart_or_json_is_415(svc):
    client_id, project_id = await svc.known_project()
    r = await svc.http.post(
        f"/v1/projects/{project_id}/documents",
        content=b"# hi",
        headers={**svc.user(client_id), "Content-Type": "text/markdown"},
    )
    svc.problem(r, 415, "unsupported_request_type")
    await assert_nothing_stored(svc)


BAD_TITLES = [
    "../../etc/passwd",
    "reports/q3",
    "C:\\Windows\\system32",
    ".env",
    "~root",
    "nul\x00byte",
    "line\nbreak",
    "",
    "x" * 201,
]


async def test_path_like_or_invalid_titles_are_refused(svc):
    client_id, project_id = await svc.known_project()
    for title in BAD_TITLES:
        r = await svc.upload_md(project_id, "# ok\n\ntext", svc.user(client_id), title=title)
        svc.problem(r, 422)
        r2 = await svc.upload_file(project_id, b"# ok\n\ntext", svc.user(client_id), fields={"title": title})
        svc.problem(r2, 422)
    await assert_nothing_stored(svc)


async def test_filename_directories_never_reach_the_title(svc):
    client_id, project_id = await svc.known_project()
    r = await svc.upload_file(
        project_id,
        b"# ok\n\ntext",
        svc.user(client_id),
        filename="../../etc/passwd.md",
        fields={"kind": "reference"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["title"] == "passwd"


BAD_FIELDS = [
    {"title": "T", "kind": "novel", "content": "x"},
    {"title": "T", "content": "x", "owner": "me"},
    {"title": "T", "content": "x", "epic": -1},
    {"title": "T", "content": "x", "tags": ["ok"] * 21},
    {"title": "T", "content": "x", "tags": ["<script>"]},
    {"title": "T", "content": 42},
    {"title": "T", "content": "x", "epic": "5"},  # the schema says integer: no lax coercion
    {"title": "T", "content": "x", "epic": True},
    {"title": "T", "content": " \n\t"},  # nothing but white space
    {"title": "T", "content": "a\x00b"},
    {"title": "T", "content": "\x01\x02\x03\x04\x05 binary"},
]


async def test_invalid_json_fields_are_422(svc):
    client_id, project_id = await svc.known_project()
    for body in BAD_FIELDS:
        r = await svc.http.post(
            f"/v1/projects/{project_id}/documents", json=body, headers=svc.user(client_id)
        )
        svc.problem(r, 422)
    await assert_nothing_stored(svc)


async def test_malformed_bodies_are_400(svc):
    client_id, project_id = await svc.known_project()
    user = svc.user(client_id)
    url = f"/v1/projects/{project_id}/documents"
    svc.problem(
        await svc.http.post(url, content=b"{nope", headers={**user, "Content-Type": "application/json"}), 400
    )
    svc.problem(
        await svc.http.post(url, content=b"[1, 2]", headers={**user, "Content-Type": "application/json"}), 400
    )
    no_file = await svc.http.post(url, files={"title": (None, "T")}, headers=user)
    svc.problem(no_file, 400, "malformed_upload")
    unknown = await svc.upload_file(project_id, b"# a\n\nb", user, fields={"title": "T", "colour": "red"})
    svc.problem(unknown, 422)
    for fields in (
        {"title": "T", "tags": "a,,b"},
        {"title": "T", "epic": " 5"},
        {"title": "T", "story": "1.0"},
    ):
        svc.problem(await svc.upload_file(project_id, b"# a\n\nb", user, fields=fields), 422)
    await assert_nothing_stored(svc)


async def test_a_patch_cannot_null_what_cannot_be_empty(svc):
    client_id, project_id = await svc.known_project()
    user = svc.user(client_id)
    r = await svc.upload_md(project_id, "# ok\n\ntext", user, title="Kept")
    assert r.status_code == 201, r.text
    url = f"/v1/documents/{r.json()['id']}"
    for body in ({"title": None}, {"kind": None}, {"tags": None}, {"epic": 1.5}, {"story": "2"}):
        svc.problem(await svc.http.patch(url, json=body, headers=user), 422)
    r = await svc.http.patch(url, json={"epic": 2.0, "story": None}, headers=user)
    assert r.status_code == 200, r.text
    assert (r.json()["title"], r.json()["epic"], r.json()["story"]) == ("Kept", 2, None)


BAD_SEARCHES = [
    {"query": "x", "limit": 51},
    {"query": "x", "limit": 0},
    {"query": "x", "limit": -5},
    {"query": "x", "limit": "lots"},
    {"query": "x", "limit": 10**12},
    {"query": "x", "mode": "psychic"},
    {"query": "   "},
    {"query": "\u3000\x85"},  # Unicode white space only
    {"query": "a\x00b"},
    {"query": "x", "limit": "5"},
    {"query": "x", "limit": True},
    {"query": "x", "project_ids": ["not-a-uuid"]},
    {"query": "x", "kinds": ["novel"]},
    {"query": "x", "extra": True},
    {"query": "a" * 100_000},
]


async def test_search_abuse_is_422(svc):
    client_id, _ = await svc.known_project()
    for body in BAD_SEARCHES:
        r = await svc.http.post("/v1/search", json=body, headers=svc.user(client_id))
        svc.problem(r, 422)


async def test_list_limit_and_cursor_abuse(svc):
    client_id, project_id = await svc.known_project()
    user = svc.user(client_id)
    url = f"/v1/projects/{project_id}/documents"
    svc.problem(await svc.http.get(f"{url}?limit=1000", headers=user), 422)
    svc.problem(await svc.http.get(f"{url}?limit=0", headers=user), 422)
    svc.problem(await svc.http.get(url, params={"tag": "a\x00b"}, headers=user), 422)
    svc.problem(await svc.http.get(url, params={"q": "a\x00b"}, headers=user), 422)
    svc.problem(await svc.http.get(f"{url}?cursor=%%%garbage", headers=user), 400)
    svc.problem(await svc.http.get(f"{url}?cursor=" + "A" * 600, headers=user), 422)
    svc.problem(await svc.http.get(f"{url}?q=" + "a" * 300, headers=user), 422)


async def test_unreadable_multipart_is_a_400(svc):
    client_id, project_id = await svc.known_project()
    # A part whose headers never end properly (a bare CR inside a header line).
    body = b'--b\r\nContent-Disposition: form-data; name="file"\rX\r\n\r\nhi\r\n--b--\r\n'
    r = await svc.http.post(
        f"/v1/projects/{project_id}/documents",
        content=body,
        headers={**svc.user(client_id), "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert svc.problem(r, 400)["detail"].startswith("The multipart body cannot be read")
    await assert_nothing_stored(svc)
