"""Talking to the object API (central's or a site's) through Quart's test client."""

from __future__ import annotations

from typing import Any

CHUNK = 64 * 1024


async def put_object(
    client: Any,
    path: str,
    data: bytes,
    headers: dict[str, str] | None = None,
    *,
    length: int | None = None,
    chunk: int = CHUNK,
) -> tuple[int, Any, Any]:
    """PUT ``data`` in chunks as a streaming client does: (status, JSON, headers)."""
    given = {"Content-Type": "application/octet-stream", **(headers or {})}
    token = getattr(client, "token", None)  # client.request bypasses TokenClient.open
    if token and "Authorization" not in given:
        given.setdefault("X-Auth-Token", token)
    if length is not None:
        given["Content-Length"] = str(length)
    async with client.request(path, method="PUT", headers=given) as conn:
        for start in range(0, len(data), chunk):
            await conn.send(data[start : start + chunk])
        await conn.send_complete()
    resp = await conn.as_response()
    return resp.status_code, await resp.get_json(), resp.headers


def obj(bucket: str, key: str) -> str:
    return f"/v1/buckets/{bucket}/objects/{key}"
