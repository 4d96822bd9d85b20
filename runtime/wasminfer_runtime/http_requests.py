"""Outbound HTTP for workers: wws's `http` import, `send-http-request`, on a core module.

wws generates this import with wit-bindgen 0.x from wit/core/http.wit; its Go, Rust and JavaScript
kits call it. The core-module ABI, as those guests use it:

    (import "http" "send-http-request"
      (func (param body_tag body_ptr body_len headers_ptr headers_len method
                   params_ptr params_len uri_ptr uri_len ret_ptr)))   ; all i32, no result

- body: option<list<u8>> (tag 0/1, then ptr, len); headers and params: list<tuple<string, string>>,
  16 bytes an element (key ptr, key len, value ptr, value len); method: the enum GET, POST, PUT,
  PATCH, DELETE, OPTIONS, HEAD (0-6); uri: a UTF-8 string.
- The result, written at ret_ptr (28 bytes): u8 tag at 0 (0 ok, 1 error). ok: u8 option tag at 4,
  body ptr at 8, len at 12, headers ptr at 16, len at 20, u16 status at 24. error: u8 http-error
  at 4 (invalid-request, invalid-request-body, invalid-response-body, not-allowed, internal-error,
  timeout, redirect-loop), message ptr at 8, len at 12.
- Lists and strings handed back live in guest memory obtained from the guest's export
  `canonical_abi_realloc(0, 0, align, size)`; the guest frees them.

A guest that breaks the ABI (a pointer or length outside its memory, text that is not UTF-8, a
tag or method out of range, no `memory` or `canonical_abi_realloc` export) traps, as the host glue
wit-bindgen generates does. What the worker may not do, or what fails on the way, is an error
result it can read.

Policy (wws's checks, in its order): a host outside `allowed_hosts` is not-allowed, then an
http:// URL without `allow_http`, then a method outside `allowed_methods`. Beyond wws: every
redirect hop passes the same checks (wws follows redirects anywhere); a URL that is not absolute
http(s) is invalid-request; the guest's Content-Length and Transfer-Encoding headers are dropped
(the client frames the body); bodies and time are bounded by the worker's `http_requests` limits.
Redirects follow reqwest's default, which wws uses: at most 9 followed, the 10th is redirect-loop;
301/302/303 turn into a GET without body (HEAD stays HEAD), 307/308 resend the method and body;
credentials are dropped when the host or port changes; Referer names the previous URL unless it
goes from https to http. Requests carry no User-Agent, Accept-Encoding or cookies, bodies arrive
undecoded, and proxy variables are not read (reqwest would).

The call blocks the invocation's thread while a shared aiohttp client, on an event loop of its
own, does the request; it ends at the invocation's deadline (deadlines.py) or when the server
stops, and then the invocation ends as a timeout, as a WASI sleep does.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import enum
import ipaddress
import logging
import re
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import wasmtime
from wasmtime import _ffi as ffi

if TYPE_CHECKING:  # imported where a call goes out: `wasminfer run` of a module that never calls stays light
    import aiohttp
    from yarl import URL

from wasminfer_runtime import capi, deadlines
from wasminfer_runtime.config import HTTP_METHODS, HttpRequestsConfig

log = logging.getLogger(__name__)

MODULE = "http"
NAME = "send-http-request"
ARITY = 11

# Bounds on what one call may ask the host to read; beyond them the call gets invalid-request.
MAX_URI_BYTES = 64 * 1024
MAX_HEADERS = 256  # request headers, and params (which wws ignores too)
MAX_HEADER_BYTES = 256 * 1024  # all names and values together
MAX_REDIRECTS = 10  # reqwest's default policy: the 10th redirect is an error
_WAIT_STEP_SECONDS = 0.05  # how often a waiting call looks at the server's stop

RET_AREA_BYTES = 28
_PAIR = struct.Struct("<IIII")  # key ptr, key len, value ptr, value len
_REDIRECTS = {301, 302, 303, 307, 308}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # a header name (RFC 9110)
_BAD_VALUE = re.compile(r"[\x00\r\n]")
_BAD_URI = re.compile(r"[\x00-\x20\x7f]")  # control characters and spaces
_FRAMING = {"content-length", "transfer-encoding"}
_CREDENTIALS = {"authorization", "cookie", "cookie2", "proxy-authorization", "www-authenticate"}
_BODY_HEADERS = {"transfer-encoding", "content-encoding", "content-type", "content-length"}

_ARGS = ctypes.c_uint32 * (4 * ARITY)  # a wasmtime_val_raw_t is 16 bytes, an i32 in its first word
_EXTERN_OF = ffi.wasmtime_extern_t.of.offset
_EXTERN_FUNC = ffi.WASMTIME_EXTERN_FUNC.value
_EXTERN_MEMORY = ffi.WASMTIME_EXTERN_MEMORY.value
_I32 = ffi.WASMTIME_I32.value
_INTERRUPT = wasmtime.TrapCode.INTERRUPT.value


class HttpError(enum.IntEnum):
    """wws's http-error enum (wit/core/http-types.wit), in its order."""

    invalid_request = 0
    invalid_request_body = 1
    invalid_response_body = 2
    not_allowed = 3
    internal_error = 4
    timeout = 5
    redirect_loop = 6


class Refused(Exception):
    """The call's answer is an error result the guest reads."""

    def __init__(self, error: HttpError, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


class GuestFault(Exception):
    """The guest broke the ABI: the call traps."""


class _Trap(Exception):
    """A trap raised by a guest function the host called (its realloc); passed on as it is."""

    def __init__(self, trap: int) -> None:
        super().__init__("trap")
        self.trap = trap


class _Interrupted(Exception):
    """The invocation's deadline passed or the server stops: the invocation ends as a timeout."""


@dataclass(frozen=True)
class OutboundRequest:
    method: str
    url: URL
    headers: tuple[tuple[str, str], ...]
    body: bytes | None


@dataclass(frozen=True)
class OutboundResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


# -- policy ------------------------------------------------------------------------------------


def _host_key(host: str) -> str:
    """A host as compared: lowercase, IPv6 without brackets, an IP address in its one canonical text
    (so `2001:0db8::1` in allowed_hosts matches a request to `[2001:db8::1]`)."""
    host = host.lower().strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


class Policy:
    """What one worker's requests may do."""

    def __init__(self, cfg: HttpRequestsConfig) -> None:
        self.cfg = cfg
        self.hosts = frozenset(_host_key(h) for h in cfg.allowed_hosts)
        self.methods = frozenset(cfg.allowed_methods)

    def check(self, url: URL, method: str) -> None:
        """Refused unless `url` and `method` are allowed (wws's checks first, in its order)."""
        host = url.host
        if host is not None and _host_key(host) not in self.hosts and _host_key(url.raw_host or "") not in self.hosts:
            raise Refused(HttpError.not_allowed, f"host {host!r} is not in this worker's "
                                                 "http_requests.allowed_hosts")
        if url.scheme == "http" and not self.cfg.allow_http:
            raise Refused(HttpError.not_allowed, "http:// URLs are refused for this worker (only https://; "
                                                 "http_requests.allow_http grants http)")
        if method not in self.methods:
            raise Refused(HttpError.not_allowed, f"method {method} is not in this worker's "
                                                 "http_requests.allowed_methods")
        if url.scheme not in ("http", "https") or not host:
            raise Refused(HttpError.invalid_request, f"{str(url)[:200]!r} is not an absolute http(s) URL")


def parse_url(text: str) -> URL:
    from yarl import URL

    if _BAD_URI.search(text):
        raise Refused(HttpError.invalid_request, "the URL holds spaces or control characters")
    try:
        url = URL(text)
        _ = url.raw_host, url.port  # a bad host or port raises here, not in the client
    except (ValueError, TypeError) as err:
        raise Refused(HttpError.invalid_request, f"not a valid URL: {err}") from None
    return url


# -- the client --------------------------------------------------------------------------------


class _Client:
    """One aiohttp session on an event loop thread of its own, shared by every worker."""

    def __init__(self) -> None:
        import asyncio  # here, with the client: a module without outbound HTTP never pays for it

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="wasminfer-http-out", daemon=True)
        self.thread.start()
        self.session = asyncio.run_coroutine_threadsafe(self._session(), self.loop).result()

    @staticmethod
    async def _session() -> aiohttp.ClientSession:
        import aiohttp

        return aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),  # workers never see each other's cookies
            auto_decompress=False,  # as reqwest without its gzip feature: bodies as sent
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(),  # the call's own timeout covers everything
            trust_env=False,
        )

    def submit(self, coro: Coroutine[Any, Any, OutboundResponse]) -> concurrent.futures.Future[OutboundResponse]:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        import asyncio

        try:
            asyncio.run_coroutine_threadsafe(self.session.close(), self.loop).result(timeout=2)
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=2)


_client: _Client | None = None
_client_lock = threading.Lock()


def _shared_client() -> _Client:
    global _client
    with _client_lock:
        if _client is None:
            _client = _Client()
            atexit.register(_client.close)
        return _client


async def _read_body(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    if resp.content_length is not None and resp.content_length > cap:
        raise Refused(HttpError.invalid_response_body,
                      f"the response body is {resp.content_length} bytes, over the {cap}-byte limit")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > cap:
            raise Refused(HttpError.invalid_response_body, f"the response body is over the {cap}-byte limit")
    return bytes(body)


def _location(resp: aiohttp.ClientResponse, url: URL) -> URL | None:
    from yarl import URL

    """Where a redirect leads; None when it has no usable Location (the response is the answer)."""
    for name, value in resp.raw_headers:
        if name.lower() == b"location":
            try:
                return url.join(URL(value.decode("utf-8")))
            except (UnicodeDecodeError, ValueError, TypeError):
                return None
    return None


async def _exchange(session: aiohttp.ClientSession, req: OutboundRequest, policy: Policy) -> OutboundResponse:
    from multidict import CIMultiDict

    method, url, body = req.method, req.url, req.body
    headers = CIMultiDict(req.headers)
    previous: list[URL] = []
    while True:
        policy.check(url, method)
        async with session.request(method, url, headers=headers, data=body, allow_redirects=False) as resp:
            nxt = _location(resp, url) if resp.status in _REDIRECTS else None
            if nxt is None:
                data = b"" if method == "HEAD" else await _read_body(resp, policy.cfg.max_response_body_bytes)
                raw = tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in resp.raw_headers)
                return OutboundResponse(resp.status, raw, data)
            previous.append(url)
            if len(previous) >= MAX_REDIRECTS:
                raise Refused(HttpError.redirect_loop, f"more than {MAX_REDIRECTS - 1} redirects (last to {nxt})")
            if resp.status in (301, 302, 303):
                body = None
                for name in _BODY_HEADERS:
                    headers.popall(name, None)
                if method not in ("GET", "HEAD"):
                    method = "GET"
            if not (nxt.scheme == "http" and url.scheme == "https"):
                headers["Referer"] = str(url.with_user(None).with_fragment(None))
            if (nxt.host, nxt.port) != (url.host, url.port):
                for name in _CREDENTIALS:
                    headers.popall(name, None)
            url = nxt


async def _send(req: OutboundRequest, policy: Policy, session: aiohttp.ClientSession) -> OutboundResponse:
    """The request, its redirects and its body within the worker's timeout; Refused for every failure."""
    import asyncio

    import aiohttp

    secs = policy.cfg.timeout_seconds
    try:
        async with asyncio.timeout(secs):
            return await _exchange(session, req, policy)
    except Refused:
        raise
    except TimeoutError:
        raise Refused(HttpError.timeout, f"no complete answer within {secs:g} s "
                                         "(http_requests.timeout_seconds)") from None
    except aiohttp.ClientPayloadError as err:
        raise Refused(HttpError.invalid_response_body, f"the response body is broken: {err}") from None
    except (aiohttp.ClientError, ValueError) as err:  # connecting, TLS, a malformed response, a bad header
        raise Refused(HttpError.invalid_request, f"the request failed: {err or type(err).__name__}") from None
    except Exception as err:
        log.exception("outbound request to %s failed in the host", req.url)
        raise Refused(HttpError.internal_error, f"the host failed: {type(err).__name__}") from None


# -- guest memory ------------------------------------------------------------------------------


def _kind(value: ffi.wasmtime_extern_t | ffi.wasmtime_val_t) -> int:
    return ctypes.c_uint8.from_buffer(value).value  # `kind`, the first field of both


class _Guest:
    """The calling instance: its memory and its realloc export, every access bounds-checked."""

    def __init__(self, caller: int) -> None:
        self.caller = caller
        self.ctx = capi.caller_context(caller)
        self._memory = self._export(b"memory", _EXTERN_MEMORY)
        self._memory_at = ctypes.addressof(self._memory) + _EXTERN_OF
        self._realloc: ffi.wasmtime_extern_t | None = None
        self.base = 0
        self.size = 0
        self.refresh()

    def _export(self, name: bytes, kind: int) -> ffi.wasmtime_extern_t:
        export = ffi.wasmtime_extern_t()
        if not capi.caller_export_get(self.caller, name, len(name), ctypes.addressof(export)) or _kind(export) != kind:
            what = "function" if kind == _EXTERN_FUNC else "memory"
            raise GuestFault(f"the module exports no {what} named `{name.decode()}`")
        return export

    def refresh(self) -> None:
        self.base = capi.memory_data(self.ctx, self._memory_at)
        self.size = capi.memory_data_size(self.ctx, self._memory_at)

    def check(self, ptr: int, length: int) -> int:
        if ptr + length > self.size:
            self.refresh()  # grown since
            if ptr + length > self.size:
                raise GuestFault(f"guest range {ptr:#x}+{length} is outside its {self.size}-byte memory")
        return self.base + ptr

    def read(self, ptr: int, length: int) -> bytes:
        return ctypes.string_at(self.check(ptr, length), length)

    def text(self, ptr: int, length: int) -> str:
        try:
            return self.read(ptr, length).decode("utf-8")
        except UnicodeDecodeError:
            raise GuestFault("a string is not UTF-8") from None

    def write(self, ptr: int, data: bytes) -> None:
        ctypes.memmove(self.check(ptr, len(data)), data, len(data))

    def alloc(self, align: int, data: bytes) -> int:
        """Copy `data` into memory from the guest's canonical_abi_realloc(0, 0, align, size)."""
        if self._realloc is None:
            self._realloc = self._export(b"canonical_abi_realloc", _EXTERN_FUNC)
        args = (ffi.wasmtime_val_t * 4)()
        for arg, value in zip(args, (0, 0, align, len(data))):
            arg.kind = _I32
            arg.of.i32 = value
        result = (ffi.wasmtime_val_t * 1)()
        trap = ctypes.c_size_t(0)
        err = capi.func_call(self.ctx, ctypes.addressof(self._realloc) + _EXTERN_OF, ctypes.addressof(args), 4,
                             ctypes.addressof(result), 1, ctypes.addressof(trap))
        if err:
            text = str(wasmtime.WasmtimeError._from_ptr(ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t))))
            raise GuestFault(f"canonical_abi_realloc cannot be called: {text.splitlines()[0] if text else ''}")
        if trap.value:
            raise _Trap(trap.value)
        if _kind(result[0]) != _I32:
            raise GuestFault("canonical_abi_realloc returned no i32")
        ptr = result[0].of.i32 & 0xFFFF_FFFF
        self.refresh()  # realloc may have grown the memory
        self.write(ptr, data)
        return ptr


def read_request(guest: _Guest, a: list[int], policy: Policy) -> OutboundRequest:
    """The guest's request: GuestFault for an ABI violation, Refused for what may not be sent."""
    body_tag, body_ptr, body_len, hdr_ptr, hdr_len, method_id, par_ptr, par_len, uri_ptr, uri_len, ret = a
    guest.check(ret, RET_AREA_BYTES)  # before anything is sent: the answer must have a place
    if body_tag not in (0, 1):
        raise GuestFault(f"invalid option tag {body_tag} for the body")
    if method_id >= len(HTTP_METHODS):
        raise GuestFault(f"invalid http-method {method_id}")
    method = HTTP_METHODS[method_id]
    if body_tag:
        guest.check(body_ptr, body_len)
    if uri_len > MAX_URI_BYTES:
        raise Refused(HttpError.invalid_request, f"the URL is {uri_len} bytes (at most {MAX_URI_BYTES})")
    if hdr_len > MAX_HEADERS or par_len > MAX_HEADERS:
        raise Refused(HttpError.invalid_request, f"more than {MAX_HEADERS} headers or params")
    headers = _pairs(guest, hdr_ptr, hdr_len)
    _pairs(guest, par_ptr, par_len)  # wws ignores params; they are checked as its glue does
    url = parse_url(guest.text(uri_ptr, uri_len))
    policy.check(url, method)
    cap = policy.cfg.max_request_body_bytes
    if body_tag and body_len > cap:
        raise Refused(HttpError.invalid_request_body, f"the request body is {body_len} bytes, over the {cap}-byte limit")
    for name, value in headers:
        if not _TOKEN.match(name) or _BAD_VALUE.search(value):
            raise Refused(HttpError.invalid_request, f"invalid header {name[:100]!r}")
    sent = tuple((k, v) for k, v in headers if k.lower() not in _FRAMING)
    return OutboundRequest(method, url, sent, guest.read(body_ptr, body_len) if body_tag else None)


def _pairs(guest: _Guest, ptr: int, count: int) -> list[tuple[str, str]]:
    if count == 0:
        return []  # an empty list's pointer is never read (a Rust guest passes a dangling one)
    raw = guest.read(ptr, count * _PAIR.size)
    out: list[tuple[str, str]] = []
    total = 0
    for i in range(count):
        kp, kl, vp, vl = _PAIR.unpack_from(raw, i * _PAIR.size)
        guest.check(kp, kl)
        guest.check(vp, vl)
        total += kl + vl
        if total > MAX_HEADER_BYTES:
            raise Refused(HttpError.invalid_request, f"headers or params over {MAX_HEADER_BYTES} bytes")
        out.append((guest.text(kp, kl), guest.text(vp, vl)))
    return out


def write_response(guest: _Guest, ret: int, resp: OutboundResponse) -> None:
    # The order of wit-bindgen's host glue: the body, the header list, then each header's strings.
    body_ptr = guest.alloc(1, resp.body)
    list_ptr = guest.alloc(4, bytes(len(resp.headers) * _PAIR.size))
    pairs = bytearray()
    for name, value in resp.headers:
        k, v = name.encode(), value.encode()
        pairs += _PAIR.pack(guest.alloc(1, k), len(k), guest.alloc(1, v), len(v))
    guest.write(list_ptr, bytes(pairs))
    guest.write(ret, struct.pack("<BxxxBxxxIIIIH2x", 0, 1, body_ptr, len(resp.body), list_ptr,
                                 len(resp.headers), resp.status))


def write_error(guest: _Guest, ret: int, refused: Refused) -> None:
    msg = refused.message.encode()
    ptr = guest.alloc(1, msg)
    guest.write(ret, struct.pack("<BxxxBxxxII", 1, int(refused.error), ptr, len(msg)))


# -- the import --------------------------------------------------------------------------------


class HttpRequestsHost:
    """One worker's `http` import: its policy, defined on its Linker."""

    def __init__(self, cfg: HttpRequestsConfig, owner: str, stopping: threading.Event) -> None:
        self.policy = Policy(cfg)
        self.owner = owner
        self.stopping = stopping
        # Kept alive with the host: the Linker holds a raw pointer to it.
        self._callback = capi.HOST_CALLBACK(self._call)

    def define(self, linker: wasmtime.Linker) -> None:
        ty = wasmtime.FuncType([wasmtime.ValType.i32()] * ARITY, [])  # fresh per linker (see wasinn/host.py)
        module, name = MODULE.encode(), NAME.encode()
        err = capi.linker_define_func_unchecked(
            capi.address(linker.ptr()), module, len(module), name, len(name),
            capi.address(ty.ptr()), capi.address(self._callback), None, None,
        )
        if err:
            raise wasmtime.WasmtimeError._from_ptr(ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t)))

    def _call(self, env: int, caller: int, raw: int, n: int) -> int:
        words = _ARGS.from_address(raw)
        args = [words[4 * i] for i in range(ARITY)]
        try:
            guest = _Guest(caller)
            try:
                result: OutboundResponse | Refused = self.send(read_request(guest, args, self.policy))
            except Refused as refused:
                result = refused
            if isinstance(result, Refused):
                log.debug("worker %s: outbound HTTP -> %s: %s", self.owner, result.error.name, result.message)
                write_error(guest, args[10], result)
            else:
                write_response(guest, args[10], result)
        except _Trap as t:
            return t.trap  # the guest's own trap (its realloc aborted, or ran past the deadline)
        except _Interrupted:
            return int(capi.trap_new_code(_INTERRUPT))
        except GuestFault as err:
            msg = f"http send-http-request: {err}".encode()
            return int(capi.trap_new(msg, len(msg)))
        except BaseException as err:  # a host bug ends this invocation, never the server
            log.exception("worker %s: outbound HTTP failed in the host", self.owner)
            msg = f"http send-http-request failed in the host: {type(err).__name__}".encode()
            return int(capi.trap_new(msg, len(msg)))
        return 0

    def send(self, req: OutboundRequest) -> OutboundResponse:
        """Do the request on the shared client; wait no longer than the invocation may."""
        if self.stopping.is_set() or deadlines.remaining() == 0:
            raise _Interrupted()
        client = _shared_client()
        future = client.submit(_send(req, self.policy, client.session))
        while True:
            left = deadlines.remaining()
            if self.stopping.is_set() or left == 0:
                future.cancel()
                raise _Interrupted()
            try:
                return future.result(timeout=_WAIT_STEP_SECONDS if left is None else min(left, _WAIT_STEP_SECONDS))
            except concurrent.futures.TimeoutError:
                continue
            except concurrent.futures.CancelledError:
                raise _Interrupted() from None
