"""The object API as a Quart blueprint, mounted by central's app and by a site's local API.

Routes (JSON errors ``{"error": {"code", "message", "details"}}``)::

    GET    /v1/buckets                              buckets the caller may see
    PUT    /v1/buckets/<bucket>                     create (central only; JSON policy body)
    GET    /v1/buckets/<bucket>?prefix=&marker=&limit=   the bucket and a page of its objects
    HEAD   /v1/buckets/<bucket>
    DELETE /v1/buckets/<bucket>                     only when empty (409 otherwise)
    PUT    /v1/buckets/<bucket>/objects/<key>       streamed body; X-Object-Meta-*, Content-MD5,
                                                    X-Content-Sha256, If-None-Match: *
    GET    /v1/buckets/<bucket>/objects/<key>       Range: bytes=..; If-None-Match
    HEAD   /v1/buckets/<bucket>/objects/<key>
    DELETE /v1/buckets/<bucket>/objects/<key>

The ``ETag`` is the sha256 (hex, quoted) of the content. Who calls is decided
by the injected ``principal`` callable (central's own authentication, or a
site's offline identity cache), so this module knows nothing of either. A
bucket belongs to one project: other projects get 404, a ``reader`` may read
but not write (403), the cloud admin sees all. Each mutation attempt goes to
the injected ``audit`` hook.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from quart import Blueprint, Request, Response, g, jsonify, request

from edged.objects import names
from edged.objects.errors import BackendUnavailable, ObjectCorrupt, ObjectError
from edged.objects.store import MAX_LIST, Bucket, ObjectStore, ObjectVersion
from edged.tokens import Principal

OBJECT_PATH = re.compile(r"^/v1/buckets/[^/]+/objects/.+$")
MUTATING = frozenset({"PUT", "POST", "DELETE"})
POLICY_KEYS = {"sites", "replicate_to_central", "peers", "project_id"}
SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CODES = {
    400: "invalid_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "precondition_failed",
    413: "request_entity_too_large",
    416: "range_not_satisfiable",
}
NOT_HERE = (
    "buckets are created and deleted at central (PUT/DELETE /v1/buckets/<name> there); "
    "a site serves the buckets its desired state lists"
)


def is_object_upload(method: str, path: str) -> bool:
    """Whether a request streams an object body (exempt from the app's body limit)."""
    return method == "PUT" and OBJECT_PATH.match(path) is not None


def request_class(base: type[Request]) -> type[Request]:
    """``base`` without the app-wide body limit on object uploads; those are bounded by
    the store's ``max_object_bytes`` instead (413)."""

    class ObjectUploadRequest(base):  # type: ignore[valid-type,misc]
        def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any):
            if is_object_upload(method, path):
                kwargs["max_content_length"] = None
            super().__init__(method, scheme, path, *args, **kwargs)

    return ObjectUploadRequest


class BucketAdmin(Protocol):
    """How central makes buckets: it checks the policy and records it for its sites."""

    def check(
        self, who: Principal, name: str, project: str, policy: dict[str, Any]
    ) -> dict[str, Any]:
        """The policy to keep (project and sites checked to exist); ObjectError otherwise."""
        ...

    def created(self, who: Principal, bucket: Bucket) -> None:
        """The bucket exists in the store; record it and tell its sites (raise to undo)."""
        ...

    def deleted(self, who: Principal, name: str) -> None: ...


@dataclass
class ObjectApi:
    """What the blueprint needs from the app that mounts it."""

    store: ObjectStore
    principal: Callable[[], Principal]
    # Called after every mutation attempt (may be a coroutine function).
    audit: Callable[[dict[str, Any]], Any]
    # None at a site: buckets come from its desired state; the API may not make them.
    buckets: BucketAdmin | None = None
    # Extra fields of a bucket's view (replication lag will go here).
    bucket_extra: Callable[[Bucket], dict[str, Any]] = lambda bucket: {}
    # A read found (bucket, key) corrupt (central starts its repair at once).
    on_corrupt: Callable[[str, str], None] = lambda bucket, key: None


def _error(status: int, field: str, message: str, code: str = "") -> Any:
    code = code or CODES.get(status, "unavailable" if status == 503 else "error")
    if status == 400:
        details: dict[str, Any] = {"fields": [{"field": field, "problem": message}]}
    else:
        details = {"field": field} if field else {}
    body = {"error": {"code": code, "message": message, "details": details}}
    return jsonify(body), status


def version_view(v: ObjectVersion) -> dict[str, Any]:
    return {"key": v.key, "etag": v.etag, "size": v.size, "hlc": v.hlc, "metadata": v.meta}


def parse_policy(body: Any) -> dict[str, Any]:
    """The replication policy of a bucket-create body (the shape only; central checks sites)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ObjectError("(body)", "the body must be a JSON object")
    unknown = sorted(set(body) - POLICY_KEYS)
    if unknown:
        raise ObjectError(unknown[0], f"unknown field {unknown[0]!r}")
    sites = body.get("sites", [])
    if not isinstance(sites, list) or not all(
        isinstance(s, str) and SITE_NAME.match(s) for s in sites
    ):
        raise ObjectError("sites", "sites must be a list of site names")
    if len(set(sites)) != len(sites):
        raise ObjectError("sites", "sites lists a site twice")
    if "project_id" in body and not isinstance(body["project_id"], str):
        raise ObjectError("project_id", "project_id must be a project id")
    policy: dict[str, Any] = {"sites": sites}
    for key, default in (("replicate_to_central", True), ("peers", False)):
        value = body.get(key, default)
        if not isinstance(value, bool):
            raise ObjectError(key, f"{key} must be true or false")
        policy[key] = value
    return policy


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` as (offset, length); None to serve it all; 416 if unsatisfiable."""
    if not header:
        return None
    match = RANGE.match(header.strip())
    if match is None:  # several ranges or another unit: serve the whole object
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise ObjectError(
                "Range", f"range {header!r} is outside the object's {size} bytes", 416
            )
        return max(0, size - n), min(n, size)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise ObjectError("Range", f"range {header!r} is outside the object's {size} bytes", 416)
    return start, end - start + 1


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ObjectError(name, f"{name} must be a positive integer")
    return int(raw)


async def _in_thread(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(func, *args, **kwargs)


def _body_chunks(loop: asyncio.AbstractEventLoop) -> Iterator[bytes]:
    """The request body as a blocking iterator, for the store's worker thread."""
    body = request.body.__aiter__()

    async def pull() -> bytes | None:
        try:
            return await body.__anext__()
        except StopAsyncIteration:
            return None

    while True:
        chunk = asyncio.run_coroutine_threadsafe(pull(), loop).result()
        if chunk is None:
            return
        yield chunk


async def _stream(first: bytes | None, rest: Iterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first is not None:
            yield first
        while True:
            chunk = await asyncio.to_thread(next, rest, None)
            if chunk is None:
                return
            yield chunk
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


def object_blueprint(api: ObjectApi, name: str = "objects") -> Blueprint:
    """The object API over ``api.store``; register it on the app."""
    # Routes say <string:bucket>, not <bucket>: quart-schema's OpenAPI path regex would
    # otherwise swallow "<bucket>/objects/<path:" into one parameter.
    bp = Blueprint(name, __name__, url_prefix="/v1/buckets")
    store = api.store

    @bp.errorhandler(ObjectError)
    async def _refused(exc: ObjectError):  # type: ignore[no-untyped-def]
        response, status = _error(exc.status, exc.field, exc.message)
        if exc.status == 416 and g.get("object_size") is not None:
            response.headers["Content-Range"] = f"bytes */{g.object_size}"
        return response, status

    @bp.errorhandler(ObjectCorrupt)
    async def _corrupt(exc: ObjectCorrupt):  # type: ignore[no-untyped-def]
        message = f"{exc.message} (awaiting repair from a replica)"
        api.on_corrupt(exc.bucket, exc.key)
        return _error(503, "key", message, code="object_corrupt")

    @bp.errorhandler(BackendUnavailable)
    async def _unavailable(exc: BackendUnavailable):  # type: ignore[no-untyped-def]
        return _error(503, "", f"object storage unavailable: {exc}")

    @bp.after_request
    async def _audit(response: Response) -> Response:
        if request.method in MUTATING:
            who: Principal | None = g.get("object_principal")
            args = request.view_args or {}
            rule = request.url_rule.rule if request.url_rule else request.path
            rule = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)
            done = api.audit(
                {
                    "action": f"{request.method} {rule}",
                    "bucket": args.get("bucket", ""),
                    "key": args.get("key", ""),
                    "result": response.status_code,
                    "user": who.user_id if who else "",
                    "user_name": who.user_name if who else "",
                    "project": who.project_id if who else "",
                    "request_id": g.get("request_id", ""),
                }
            )
            if inspect.isawaitable(done):
                await done
        return response

    def caller() -> Principal:
        who = api.principal()
        g.object_principal = who
        return who

    def visible(who: Principal, bucket: str) -> Bucket:
        """The bucket if the caller may see it; another project's is 404."""
        names.bucket_name(bucket)
        found = store.bucket(bucket)
        if not who.is_cloud_admin and found.project_id != who.project_id:
            raise ObjectError("bucket", f"bucket {bucket!r} does not exist", 404)
        return found

    def writable(who: Principal, bucket: str) -> Bucket:
        found = visible(who, bucket)
        if not who.can_write:
            raise ObjectError("role", f"role {sorted(who.roles)} may read but not write", 403)
        return found

    def bucket_view(bucket: Bucket) -> dict[str, Any]:
        return {
            "name": bucket.name,
            "project_id": bucket.project_id,
            "created": bucket.created,
            "policy": bucket.policy,
            "orphaned": bucket.orphaned,
            **store.bucket_usage(bucket.name),
            **api.bucket_extra(bucket),
        }

    @bp.get("")
    async def list_buckets():  # type: ignore[no-untyped-def]
        who = caller()
        found = await _in_thread(store.buckets, None if who.is_cloud_admin else who.project_id)
        return jsonify({"buckets": [bucket_view(b) for b in found]})

    @bp.put("/<string:bucket>")
    async def create_bucket(bucket: str):  # type: ignore[no-untyped-def]
        who = caller()
        if api.buckets is None:
            raise ObjectError("bucket", NOT_HERE, 405)
        if not who.can_write:
            raise ObjectError("role", f"role {sorted(who.roles)} may read but not write", 403)
        names.bucket_name(bucket)
        body = await request.get_json(force=True, silent=True) if await request.get_data() else {}
        if body is None:
            raise ObjectError("(body)", "the body must be a JSON object")
        policy = parse_policy(body)
        project = body.get("project_id", who.project_id) if isinstance(body, dict) else None
        if not isinstance(project, str) or not project:
            raise ObjectError("project_id", "project_id must be a project id")
        if project != who.project_id and not who.is_cloud_admin:
            raise ObjectError(
                "project_id", "only a cloud admin may create another project's bucket", 403
            )
        policy = api.buckets.check(who, bucket, project, policy)
        made = await _in_thread(store.create_bucket, project, bucket, policy)
        try:
            api.buckets.created(who, made)
        except BaseException:
            await _in_thread(store.delete_bucket, bucket)
            raise
        return jsonify({"bucket": bucket_view(made)}), 201

    @bp.get("/<string:bucket>")
    async def show_bucket(bucket: str):  # type: ignore[no-untyped-def]
        who = caller()
        found = visible(who, bucket)
        view = bucket_view(found)
        if request.method == "HEAD":
            return Response(
                "",
                headers={
                    "X-Bucket-Object-Count": str(view["objects"]),
                    "X-Bucket-Bytes-Used": str(view["bytes"]),
                },
            )
        prefix = request.args.get("prefix", "")
        marker = request.args.get("marker", "")
        limit = min(_int_arg("limit", MAX_LIST), MAX_LIST)
        page, next_marker = await _in_thread(store.list, bucket, prefix, marker, limit)
        return jsonify(
            {
                "bucket": view,
                "objects": [version_view(v) for v in page],
                "next_marker": next_marker,
            }
        )

    @bp.delete("/<string:bucket>")
    async def delete_bucket(bucket: str):  # type: ignore[no-untyped-def]
        who = caller()
        if api.buckets is None:
            raise ObjectError("bucket", NOT_HERE, 405)
        writable(who, bucket)
        await _in_thread(store.delete_bucket, bucket)
        api.buckets.deleted(who, bucket)
        return "", 204

    @bp.put("/<string:bucket>/objects/<path:key>")
    async def put_object(bucket: str, key: str):  # type: ignore[no-untyped-def]
        who = caller()
        writable(who, bucket)
        names.object_key(key)
        meta = names.metadata_from_headers(request.headers)
        if request.headers.get("If-None-Match", "").strip() == "*":
            try:
                await _in_thread(store.head, bucket, key)
            except ObjectError:
                pass
            else:
                raise ObjectError("If-None-Match", f"object {key!r} exists", 412)
        version = await _in_thread(
            store.put,
            bucket,
            key,
            _body_chunks(asyncio.get_running_loop()),
            meta,
            content_length=request.content_length,
            content_md5=request.headers.get("Content-MD5"),
            content_sha256=request.headers.get("X-Content-Sha256"),
        )
        response = jsonify({"object": version_view(version)})
        response.headers["ETag"] = f'"{version.etag}"'
        return response, 201

    def object_headers(v: ObjectVersion) -> dict[str, str]:
        headers = {
            "ETag": f'"{v.etag}"',
            "Accept-Ranges": "bytes",
            "X-Object-Hlc": v.hlc,
            "Content-Type": "application/octet-stream",
        }
        for meta_name, value in v.meta.items():
            headers[f"X-Object-Meta-{meta_name}"] = value
        return headers

    @bp.get("/<string:bucket>/objects/<path:key>")
    async def get_object(bucket: str, key: str):  # type: ignore[no-untyped-def]
        who = caller()
        visible(who, bucket)
        names.object_key(key)
        head = await _in_thread(store.head, bucket, key)
        headers = object_headers(head)
        wanted = request.headers.get("If-None-Match", "")
        if head.etag in {t.strip().strip('"') for t in wanted.split(",")} or wanted == "*":
            return Response("", status=304, headers=headers)
        g.object_size = head.size
        rng = parse_range(request.headers.get("Range"), head.size)
        status = 200
        if rng is not None:
            status = 206
            headers["Content-Range"] = f"bytes {rng[0]}-{rng[0] + rng[1] - 1}/{head.size}"
        headers["Content-Length"] = str(head.size if rng is None else rng[1])
        if request.method == "HEAD":
            response = Response("", status=status, headers=headers)
            response.headers["Content-Length"] = headers["Content-Length"]
            return response
        version, chunks = await _in_thread(store.get, bucket, key, rng)
        if version.hlc != head.hlc:  # replaced between the two reads: serve the newer one
            headers.update(object_headers(version))
            if rng is None:
                headers["Content-Length"] = str(version.size)
        # The first chunk before the headers: a corrupt small object is a 503, not a cut body.
        first = await asyncio.to_thread(next, chunks, None)
        return Response(_stream(first, chunks), status=status, headers=headers)

    @bp.delete("/<string:bucket>/objects/<path:key>")
    async def delete_object(bucket: str, key: str):  # type: ignore[no-untyped-def]
        who = caller()
        writable(who, bucket)
        names.object_key(key)
        await _in_thread(store.delete, bucket, key)
        return "", 204

    return bp
