"""The endpoints: bulk and single-flag evaluation, event streams, status.

The bulk path, in order: credentials, selector, body and context (each refused before
the next is read), then the ETag from the flag set's fingerprint and the canonical
context. A matching ``If-None-Match`` is answered 304 there, with nothing evaluated or
looked up; unless the request carries a ``flagConfigEtag`` that is not the flag set's
current fingerprint (protocol PR #84): the files are then checked at once (the change
may have reached another replica first) and the answer is a 200. A 200 comes from the
body cache, or is evaluated and kept there; either way its evaluations are counted.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from aiohttp import web
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason

from ._cache import Cached
from ._count import record
from ._evaluate import Result, evaluate, evaluate_all
from ._request import (
    MAX_KEY_CHARS,
    BadRequest,
    etag_of,
    matches,
    parse_context,
    read_body,
    selected_set,
    set_id,
)
from ._state import SERVER, Server
from ._views import View

_encode = msgspec.json.encode
_JSON = "application/json"


def _error(err: BadRequest, key: str | None = None) -> web.Response:
    body: dict[str, Any] = {"errorCode": err.code, "errorDetails": err.details}
    if key is not None:
        body = {"key": key, **body}
    return web.Response(status=err.status, body=_encode(body), content_type=_JSON)


async def _request_context(
    request: web.Request, srv: Server
) -> tuple[View, bytes, EvaluationContext]:
    opts = srv.options
    view_id = selected_set(request.headers.get("Flagd-Selector"))
    raw = await read_body(request, opts.max_body_bytes, opts.body_timeout_s)
    canonical, context = parse_context(raw, opts.max_context_depth, opts.max_context_values)
    return srv.files.config.view(view_id), canonical, context


async def bulk(request: web.Request) -> web.Response:
    srv = request.app[SERVER]
    srv.counts["bulk_requests"] += 1
    try:
        srv.auth.check(request)
        view, canonical, context = await _request_context(request, srv)
    except BadRequest as err:
        srv.counts["bad_requests"] += 1
        return _error(err)
    announced = request.query.get("flagConfigEtag")
    newer = announced is not None and announced != view.fingerprint
    if newer:
        # The client heard of a configuration this process may not have read yet.
        await srv.files.check_now()
        view = srv.files.config.view(view.set_id)
        newer = announced != view.fingerprint
    advert = srv.advert
    if view.volatile:
        return _volatile(request, srv, view, canonical, context, newer)
    etag = etag_of(view.fingerprint, advert, canonical)
    if not newer and matches(request.headers.get("If-None-Match"), etag):
        srv.counts["not_modified"] += 1
        return web.Response(status=304, headers={"ETag": etag})
    key = (view.set_id, view.fingerprint, canonical)
    cached = srv.cache.get(key)
    if cached is None:
        items, results = evaluate_all(view, context)
        cached = Cached(_body(request, srv, view, items), etag, tuple(results), context)
        srv.cache.put(key, cached)
    _count(srv, cached.results, cached.context)
    srv.counts["ok"] += 1
    return web.Response(body=cached.body, content_type=_JSON, headers={"ETag": cached.etag})


def _volatile(
    request: web.Request,
    srv: Server,
    view: View,
    canonical: bytes,
    context: EvaluationContext,
    newer: bool,
) -> web.Response:
    """A flag set whose rules read the clock: evaluated every time, its ETag covering
    the body too, so a 304 still means the very same answer."""
    items, results = evaluate_all(view, context)
    body = _body(request, srv, view, items)
    digest = hashlib.blake2b(body, digest_size=16).hexdigest()
    etag = etag_of(view.fingerprint, srv.advert + "\n" + digest, canonical)
    _count(srv, results, context)
    if not newer and matches(request.headers.get("If-None-Match"), etag):
        srv.counts["not_modified"] += 1
        return web.Response(status=304, headers={"ETag": etag})
    srv.counts["ok"] += 1
    return web.Response(body=body, content_type=_JSON, headers={"ETag": etag})


def _body(request: web.Request, srv: Server, view: View, items: list[dict[str, Any]]) -> bytes:
    answer: dict[str, Any] = {"flags": items}
    if view.metadata:
        answer["metadata"] = view.metadata
    stream = srv.stream_advert(view.set_id)
    if stream is not None:
        answer["eventStreams"] = [stream]
    return _encode(answer)


def _count(srv: Server, results: tuple[Result, ...] | list[Result], context: Any) -> None:
    srv.counts["evaluations"] += len(results)
    if srv.telemetry is not None:
        for flag_key, details in results:
            record(srv.telemetry, flag_key, details, context)


async def single(request: web.Request) -> web.Response:
    srv = request.app[SERVER]
    srv.counts["single_requests"] += 1
    key = request.match_info["key"]
    try:
        srv.auth.check(request)
        view, _, context = await _request_context(request, srv)
    except BadRequest as err:
        srv.counts["bad_requests"] += 1
        return _error(err, key)
    entry = view.index.get(key) if len(key) <= MAX_KEY_CHARS else None
    if entry is None:
        srv.counts["not_found"] += 1
        message = "flag not found"
        missing = FlagResolutionDetails(None, ErrorCode.FLAG_NOT_FOUND, message, Reason.ERROR)
        _count(srv, [(key[:MAX_KEY_CHARS], missing)], context)
        body = {"key": key[:MAX_KEY_CHARS], "errorCode": "FLAG_NOT_FOUND", "errorDetails": message}
        return web.Response(status=404, body=_encode(body), content_type=_JSON)
    item, details = evaluate(entry, context)
    _count(srv, [(key, details)], context)
    status = 400 if "errorCode" in item else 200
    srv.counts["ok" if status == 200 else "evaluation_errors"] += 1
    return web.Response(status=status, body=_encode(item), content_type=_JSON)


async def stream(request: web.Request) -> web.StreamResponse:
    srv = request.app[SERVER]
    channel = request.query.get("channels")
    try:
        chosen = None if channel is None else set_id(channel)
    except BadRequest as err:
        return _error(err)
    srv.auth.check(request, chosen, stream=True)
    if not srv.options.event_streams:
        raise web.HTTPNotFound()
    return await srv.hub.serve(request, chosen)


async def status(request: web.Request) -> web.Response:
    """Counters and each flag set's fingerprint (for operators and replica checks)."""
    srv = request.app[SERVER]
    srv.auth.check(request)
    return web.Response(body=_encode(srv.status()), content_type=_JSON)
