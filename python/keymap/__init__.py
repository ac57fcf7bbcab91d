# SPDX-License-Identifier: BSD-3-Clause
"""Python binding of libkeymap, the UDP client library of keymap (ctypes, no build step).

Synchronous calls::

    import keymap

    with keymap.Client("10.0.0.1") as c:
        v = c.put("user42/name", "Ada")
        value, version = c.get("user42/name")

asyncio::

    async with keymap.AsyncClient("10.0.0.1") as c:
        values = await asyncio.gather(*(c.aget(k) for k in keys))

The library is the one named by the environment variable KEYMAP_LIB (a path) when it is
set, else the one ctypes.util.find_library('keymap') finds, else libkeymap.so.2. A handle is
single-threaded (see km_client.h): use one Client per thread; an AsyncClient belongs to the
event loop that first awaited one of its calls.
"""

import asyncio
import ctypes
import ctypes.util
import dataclasses
import enum
import operator
import os
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

__all__ = [
    "Err", "Op", "KeymapError", "NotFound", "VersionMismatch", "TooLarge", "BadRequest",
    "Busy", "Denied", "ServerError", "Timeout", "InvalidArgument", "KeymapSystemError",
    "ProtocolError", "Moved", "NoMemory", "BufferTooSmall", "MapVersion", "Damaged",
    "Full", "AuthError", "Resolve", "Unreachable", "Client", "AsyncClient", "BatchOp",
    "BatchResult", "KmClientOpts", "KmBatchOp", "KmMgetItem", "KmClientStats",
    "KEY_MAX", "VALUE_MAX", "AUTH_LEN", "strerror", "library",
]

# km_client.h's limits.
KEY_MAX = 250
VALUE_MAX = 64959
AUTH_LEN = 20

# The first buffer of a value read by mget, batch and the async calls (each grown to the
# value's length on KM_ERR_BUFFER); a sync get reads into a VALUE_MAX buffer.
SMALL_CAP = 1024


def _load():
    path = os.environ.get("KEYMAP_LIB")
    names = []
    if path:
        names.append(path)
    found = ctypes.util.find_library("keymap")
    if found:
        names.append(found)
    names.append("libkeymap.so.2")
    err = None
    for n in names:
        try:
            return ctypes.CDLL(n, use_errno=True)
        except OSError as e:
            err = e
    raise ImportError("keymap: cannot load libkeymap (tried %s): %s" % (", ".join(names), err))


library = _load()
_lib = library


class Err(enum.IntEnum):
    """enum km_err."""
    OK = 0
    NOT_FOUND = -1
    VERSION_MISMATCH = -2
    TOO_LARGE = -3
    BAD_REQUEST = -4
    BUSY = -5
    DENIED = -6
    SERVER = -7
    TIMEOUT = -8
    INVAL = -9
    SYSTEM = -10
    PROTO = -11
    MOVED = -12
    NOMEM = -13
    BUFFER = -14
    MAP_VERSION = -15
    DAMAGED = -16
    FULL = -17
    AUTH = -18
    RESOLVE = -19
    UNREACHABLE = -20


class Op(enum.IntEnum):
    """enum km_batch_opcode."""
    PING = 1
    GET = 2
    PUT = 4
    CAS = 5
    DEL = 6


# ---- the structs of km_client.h ---------------------------------------------------------

class KmClientOpts(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("host", ctypes.c_char_p),
        ("port", ctypes.c_uint16),
        ("timeout_ms", ctypes.c_uint),
        ("retries", ctypes.c_uint),
        ("session", ctypes.c_uint32),
        ("no_steer", ctypes.c_int),
        ("window", ctypes.c_uint),
        ("auth_key", ctypes.c_char_p),
        ("lazy", ctypes.c_int),
        ("reserved", ctypes.c_uint32),
    ]


class KmMgetItem(ctypes.Structure):
    _fields_ = [
        ("key", ctypes.c_void_p),
        ("klen", ctypes.c_size_t),
        ("buf", ctypes.c_void_p),
        ("cap", ctypes.c_size_t),
        ("len", ctypes.c_size_t),
        ("version", ctypes.c_uint64),
        ("err", ctypes.c_int),
    ]


class KmBatchOp(ctypes.Structure):
    _fields_ = [
        ("op", ctypes.c_uint8),
        ("key", ctypes.c_void_p),
        ("klen", ctypes.c_size_t),
        ("val", ctypes.c_void_p),
        ("vlen", ctypes.c_size_t),
        ("version", ctypes.c_uint64),
        ("buf", ctypes.c_void_p),
        ("cap", ctypes.c_size_t),
        ("session", ctypes.c_uint32),
        ("err", ctypes.c_int),
        ("len", ctypes.c_size_t),
        ("out_version", ctypes.c_uint64),
        ("latency_ns", ctypes.c_uint64),
    ]


class KmScanItem(ctypes.Structure):
    _fields_ = [
        ("key", ctypes.c_void_p),
        ("klen", ctypes.c_size_t),
        ("val", ctypes.c_void_p),
        ("vlen", ctypes.c_size_t),
        ("version", ctypes.c_uint64),
    ]


class KmClientStats(ctypes.Structure):
    _fields_ = [
        ("requests", ctypes.c_uint64),
        ("retries", ctypes.c_uint64),
        ("timeouts", ctypes.c_uint64),
        ("moved", ctypes.c_uint64),
        ("map_refreshes", ctypes.c_uint64),
        ("stray_replies", ctypes.c_uint64),
        ("cookie_fetches", ctypes.c_uint64),
        ("denied", ctypes.c_uint64),
        ("crew_spread", ctypes.c_uint64),
        ("moved_behind", ctypes.c_uint64),
    ]


# void (*km_done_fn)(struct km_batch_op *op, void *arg): both as addresses.
DONE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)

# void (*km_scan_fn)(void *arg, const struct km_scan_item *it).
SCAN_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(KmScanItem))

_P = ctypes.c_void_p
_SZ = ctypes.c_size_t
_U64P = ctypes.POINTER(ctypes.c_uint64)


def _proto(name, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_strerror = _proto("km_strerror", ctypes.c_char_p, ctypes.c_int)
_open = _proto("km_client_open", ctypes.c_int, ctypes.POINTER(KmClientOpts), ctypes.POINTER(_P))
_close = _proto("km_client_close", None, _P)
_ping = _proto("km_ping", ctypes.c_int, _P, ctypes.c_uint)
_get = _proto("km_get", ctypes.c_int, _P, ctypes.c_char_p, _SZ, _P, _SZ,
              ctypes.POINTER(_SZ), _U64P)
_put = _proto("km_put", ctypes.c_int, _P, ctypes.c_char_p, _SZ, ctypes.c_char_p, _SZ, _U64P)
_cas = _proto("km_cas", ctypes.c_int, _P, ctypes.c_char_p, _SZ, ctypes.c_char_p, _SZ,
              ctypes.c_uint64, _U64P)
_del = _proto("km_del", ctypes.c_int, _P, ctypes.c_char_p, _SZ, ctypes.c_uint64)
_mget = _proto("km_mget", ctypes.c_int, _P, ctypes.POINTER(KmMgetItem), _SZ)
_batch = _proto("km_batch", ctypes.c_int, _P, ctypes.POINTER(KmBatchOp), _SZ)
_scan = _proto("km_scan", ctypes.c_int, _P, ctypes.c_char_p, _SZ, _U64P, ctypes.c_uint,
               ctypes.c_uint, SCAN_FN, _P)
_submit = _proto("km_submit", ctypes.c_int, _P, ctypes.POINTER(KmBatchOp), DONE_FN, _P)
_process = _proto("km_process", ctypes.c_int, _P)
_async_fd = _proto("km_async_fd", ctypes.c_int, _P)
_async_want_write = _proto("km_async_want_write", ctypes.c_int, _P)
_async_timeout_ms = _proto("km_async_timeout_ms", ctypes.c_int, _P)
_async_pending = _proto("km_async_pending", _SZ, _P)
_set_session = _proto("km_client_set_session", ctypes.c_int, _P, ctypes.c_uint32)
_get_session = _proto("km_client_session", ctypes.c_uint32, _P)
_map_refresh = _proto("km_map_refresh", ctypes.c_int, _P)
_epoch = _proto("km_client_epoch", ctypes.c_uint32, _P)
_worker_of = _proto("km_client_worker_of", ctypes.c_uint, _P, ctypes.c_char_p, _SZ)
_nb_workers = _proto("km_client_nb_workers", ctypes.c_uint, _P)
_get_stats = _proto("km_client_get_stats", None, _P, ctypes.POINTER(KmClientStats))


def strerror(code: int) -> str:
    """km_strerror(code)."""
    return _strerror(int(code)).decode("utf-8", "replace")


# ---- errors -------------------------------------------------------------------------------

class KeymapError(Exception):
    """A libkeymap error: .code (an Err when known) and .message (km_strerror's text)."""

    def __init__(self, code: int, context: Optional[str] = None):
        try:
            code = Err(code)
        except ValueError:
            pass
        self.code = code
        self.message = strerror(code)
        self.context = context
        text = self.message if context is None else "%s: %s" % (context, self.message)
        super().__init__(text)


class NotFound(KeymapError):
    pass


class VersionMismatch(KeymapError):
    """.current_version: the entry's version when the server told it (0: absent)."""
    current_version = None


class TooLarge(KeymapError):
    pass


class BadRequest(KeymapError):
    pass


class Busy(KeymapError):
    pass


class Denied(KeymapError):
    pass


class ServerError(KeymapError):
    pass


class Timeout(KeymapError):
    pass


class InvalidArgument(KeymapError):
    pass


class KeymapSystemError(KeymapError):
    """A socket error; .errno is the errno at the failure (0 when unknown)."""
    errno = 0


class ProtocolError(KeymapError):
    pass


class Moved(KeymapError):
    pass


class NoMemory(KeymapError):
    pass


class BufferTooSmall(KeymapError):
    pass


class MapVersion(KeymapError):
    pass


class Damaged(KeymapError):
    pass


class Full(KeymapError):
    pass


class AuthError(KeymapError):
    pass


class Resolve(KeymapError):
    pass


class Unreachable(KeymapError):
    pass


_ERRORS = {
    Err.NOT_FOUND: NotFound,
    Err.VERSION_MISMATCH: VersionMismatch,
    Err.TOO_LARGE: TooLarge,
    Err.BAD_REQUEST: BadRequest,
    Err.BUSY: Busy,
    Err.DENIED: Denied,
    Err.SERVER: ServerError,
    Err.TIMEOUT: Timeout,
    Err.INVAL: InvalidArgument,
    Err.SYSTEM: KeymapSystemError,
    Err.PROTO: ProtocolError,
    Err.MOVED: Moved,
    Err.NOMEM: NoMemory,
    Err.BUFFER: BufferTooSmall,
    Err.MAP_VERSION: MapVersion,
    Err.DAMAGED: Damaged,
    Err.FULL: Full,
    Err.AUTH: AuthError,
    Err.RESOLVE: Resolve,
    Err.UNREACHABLE: Unreachable,
}


def error(code: int, context: Optional[str] = None) -> KeymapError:
    """The exception for an error code (KeymapError itself for an unknown one)."""
    e = _ERRORS.get(code, KeymapError)(code, context)
    if isinstance(e, KeymapSystemError):
        e.errno = ctypes.get_errno()
    return e


def _check(rc: int, context: Optional[str] = None) -> int:
    if rc < 0:
        raise error(rc, context)
    return rc


Bytes = Union[bytes, bytearray, memoryview, str]


def _uint(x: Any, bits: int, name: str) -> int:
    """x as an unsigned integer of `bits` bits. ctypes would wrap a negative or too large
    value around without a word (a version of -1 becoming 2**64 - 1): TypeError for what
    is not an integer (bool included), ValueError out of range."""
    if isinstance(x, bool):
        raise TypeError("%s: an integer, not a bool" % name)
    try:
        v = operator.index(x)
    except TypeError:
        raise TypeError("%s: an integer, not %s" % (name, type(x).__name__)) from None
    if not 0 <= v < 1 << bits:
        raise ValueError("%s: %d is not in 0..%d" % (name, v, (1 << bits) - 1))
    return v


def _b(x: Bytes) -> bytes:
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, bytes):
        return x
    if isinstance(x, (bytearray, memoryview)):
        return bytes(x)
    raise TypeError("keymap: keys and values are bytes or str, not %s" % type(x).__name__)


def _addr(b: bytes) -> int:
    """Address of a bytes object's data (valid while b is alive)."""
    return ctypes.cast(ctypes.c_char_p(b), ctypes.c_void_p).value or 0


# ---- batch ops ----------------------------------------------------------------------------

@dataclasses.dataclass
class BatchOp:
    """One op of Client.batch(): op is an Op or its name ('ping', 'get', 'put', 'cas',
    'del'/'delete'); value for PUT/CAS; version: CAS's or DEL's expected version."""
    op: Union[Op, str, int]
    key: Bytes = b""
    value: Optional[Bytes] = None
    version: int = 0
    session: int = 0


def _as_err(code: int):
    """An Err for a known code, else the int (a newer library's)."""
    try:
        return Err(code)
    except ValueError:
        return code


@dataclasses.dataclass
class BatchResult:
    """What one op of a batch got: err (an Err; per-op errors do not raise), the value of
    a GET (None otherwise or on error), version (the new one; a GET's; on
    VERSION_MISMATCH the current one), latency_ns."""
    op: Op
    key: bytes
    err: int
    value: Optional[bytes] = None
    version: int = 0
    latency_ns: int = 0

    @property
    def ok(self) -> bool:
        return self.err == Err.OK

    @property
    def error(self) -> Optional[KeymapError]:
        return None if self.err == Err.OK else error(self.err)


_OP_NAMES = {"ping": Op.PING, "get": Op.GET, "put": Op.PUT, "cas": Op.CAS,
             "del": Op.DEL, "delete": Op.DEL}


def _opcode(o: Union[Op, str, int]) -> Op:
    if isinstance(o, str):
        try:
            return _OP_NAMES[o.lower()]
        except KeyError:
            raise ValueError("keymap: unknown op %r" % o) from None
    return Op(o)


def _batch_op(d: Any) -> BatchOp:
    """A BatchOp from a BatchOp or a tuple: ('get', key), ('put', key, value),
    ('cas', key, value, version), ('del', key[, version]), ('ping',)."""
    if isinstance(d, BatchOp):
        return d
    if not isinstance(d, (tuple, list)) or not d:
        raise TypeError("keymap: a batch op is a BatchOp or a tuple (op, key, ...)")
    op = _opcode(d[0])
    rest = list(d[1:])
    if op == Op.PING:
        return BatchOp(op)
    if op == Op.GET:
        return BatchOp(op, *rest[:1])
    if op == Op.PUT:
        return BatchOp(op, *rest[:2])
    if op == Op.CAS:
        return BatchOp(op, *rest[:3])
    return BatchOp(op, rest[0], None, *rest[1:2])


class _Req:
    """A struct km_batch_op with the buffers it points at (kept alive with it)."""
    __slots__ = ("op", "key", "val", "buf", "kind", "fut", "done_fn")

    def __init__(self, d: BatchOp, cap: int = SMALL_CAP):
        self.kind = _opcode(d.op)
        self.key = _b(d.key)
        self.val = _b(d.value) if d.value is not None else b""
        self.buf = ctypes.create_string_buffer(cap) if self.kind == Op.GET else None
        self.fut = None
        self.done_fn = None
        o = KmBatchOp()
        o.op = int(self.kind)
        o.key = _addr(self.key)
        o.klen = len(self.key)
        o.val = _addr(self.val)
        o.vlen = len(self.val)
        o.version = _uint(d.version, 64, "version")
        o.session = _uint(d.session, 32, "session")
        if self.buf is not None:
            o.buf = ctypes.addressof(self.buf)
            o.cap = cap
        self.op = o

    def grow(self, size: int) -> None:
        """A buffer of size bytes for the value (after KM_ERR_BUFFER); results cleared."""
        self.buf = ctypes.create_string_buffer(max(size, 1))
        self.op.buf = ctypes.addressof(self.buf)
        self.op.cap = max(size, 1)
        self.op.err = 0
        self.op.len = 0

    def value(self) -> Optional[bytes]:
        if self.kind != Op.GET or self.op.err != Err.OK:
            return None
        return ctypes.string_at(self.op.buf, self.op.len)


# ---- the client -----------------------------------------------------------------------

class Client:
    """A libkeymap handle (km_client_open). Blocking calls; single-threaded.

    host: an IPv4 address or a name, or cluster seeds "a,b:7071"; timeout_ms, retries,
    window: 0 = the library's defaults (200 ms, 3, 64); session: session id (0 = none);
    no_steer: send everything to the first seed's base port; auth_key: "ID:HEX";
    lazy: open even when no seed answers. Raises Resolve, Unreachable, InvalidArgument...
    """

    def __init__(self, host: str, port: int = 7070, timeout_ms: int = 0, retries: int = 0,
                 session: int = 0, no_steer: bool = False, window: int = 0,
                 auth_key: Optional[str] = None, lazy: bool = False):
        self._c = None
        self._buf = ctypes.create_string_buffer(VALUE_MAX)
        o = KmClientOpts()
        o.size = ctypes.sizeof(KmClientOpts)
        o.host = _b(host)
        o.port = _uint(port, 16, "port")
        o.timeout_ms = _uint(timeout_ms, 32, "timeout_ms")
        o.retries = _uint(retries, 32, "retries")
        o.session = _uint(session, 32, "session")
        o.no_steer = 1 if no_steer else 0
        o.window = _uint(window, 32, "window")
        o.auth_key = _b(auth_key) if auth_key is not None else None
        o.lazy = 1 if lazy else 0
        h = ctypes.c_void_p()
        _check(_open(ctypes.byref(o), ctypes.byref(h)), "open %s" % host)
        self._c = h

    # -- life cycle
    def close(self) -> None:
        """km_client_close (idempotent)."""
        if self._c is not None:
            _close(self._c)
            self._c = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    @property
    def closed(self) -> bool:
        return self._c is None

    def _h(self):
        if self._c is None:
            raise ValueError("keymap: the client is closed")
        return self._c

    # -- calls
    def ping(self, worker: int = 0) -> None:
        _check(_ping(self._h(), _uint(worker, 32, "worker")), "ping")

    def get(self, key: Bytes) -> Tuple[bytes, int]:
        """(value, version); raises NotFound."""
        h = self._h()
        k = _b(key)
        n = _SZ()
        ver = ctypes.c_uint64()
        buf = self._buf
        rc = _get(h, k, len(k), buf, len(buf), ctypes.byref(n), ctypes.byref(ver))
        if rc == Err.BUFFER:
            buf = self._buf = ctypes.create_string_buffer(n.value)
            rc = _get(h, k, len(k), buf, len(buf), ctypes.byref(n), ctypes.byref(ver))
        _check(rc, "get")
        return ctypes.string_at(buf, n.value), ver.value

    def put(self, key: Bytes, value: Bytes) -> int:
        """The new version."""
        k, v = _b(key), _b(value)
        ver = ctypes.c_uint64()
        _check(_put(self._h(), k, len(k), v, len(v), ctypes.byref(ver)), "put")
        return ver.value

    def cas(self, key: Bytes, value: Bytes, version: int) -> int:
        """Write only if the entry's version is `version` (0: only if absent); the new
        version. Raises VersionMismatch (with .current_version, 0 if absent)."""
        k, v = _b(key), _b(value)
        ver = ctypes.c_uint64()
        rc = _cas(self._h(), k, len(k), v, len(v), _uint(version, 64, "version"),
                  ctypes.byref(ver))
        if rc < 0:
            e = error(rc, "cas")
            if isinstance(e, VersionMismatch):
                e.current_version = ver.value
            raise e
        return ver.value

    def delete(self, key: Bytes, version: int = 0) -> None:
        """DEL; version 0 = unconditional. Raises NotFound, VersionMismatch."""
        k = _b(key)
        _check(_del(self._h(), k, len(k), _uint(version, 64, "version")), "delete")

    def mget(self, keys: Sequence[Bytes]) -> List[Tuple[Optional[bytes], int]]:
        """[(value or None when absent, version)] in the order of keys; another per-key
        error raises."""
        h = self._h()
        ks = [_b(k) for k in keys]
        n = len(ks)
        if n == 0:
            return []
        items = (KmMgetItem * n)()
        bufs = [ctypes.create_string_buffer(SMALL_CAP) for _ in range(n)]
        for i, k in enumerate(ks):
            it = items[i]
            it.key = _addr(k)
            it.klen = len(k)
            it.buf = ctypes.addressof(bufs[i])
            it.cap = SMALL_CAP
        _check(_mget(h, items, n), "mget")
        out = []
        for i, k in enumerate(ks):
            it = items[i]
            if it.err == Err.OK:
                out.append((ctypes.string_at(it.buf, it.len), it.version))
            elif it.err == Err.NOT_FOUND:
                out.append((None, it.version))
            elif it.err == Err.BUFFER:
                try:
                    out.append(self.get(k))
                except NotFound:
                    out.append((None, 0))
            else:
                raise error(it.err, "mget")
        return out

    def scan(self, prefix: Bytes, keys_only: bool = False,
             page: int = 0) -> Iterator[Tuple[bytes, Optional[bytes], int]]:
        """Every key that begins with prefix, as (key, value or None with keys_only,
        version), one SCAN page (at most `page` entries, 0: a datagram's worth) per round
        trip, in the server's order (by key hash). The prefix must end the routing part of
        its keys (e.g. "user42/"): else InvalidArgument. A key present and not written
        during the whole scan comes exactly once (docs/protocol.md 4.3)."""
        p = _b(prefix)
        cursor = ctypes.c_uint64(0)
        got: List[Tuple[bytes, Optional[bytes], int]] = []

        def one(_arg, item):
            it = item.contents
            val = None if keys_only else ctypes.string_at(it.val, it.vlen) if it.vlen else b""
            got.append((ctypes.string_at(it.key, it.klen), val, it.version))

        fn = SCAN_FN(one)
        while True:
            _check(_scan(self._h(), p, len(p), ctypes.byref(cursor), _uint(page, 32, "page"),
                         1 if keys_only else 0, fn, None), "scan")
            yield from got
            got.clear()
            if cursor.value == 0:
                return

    def batch(self, ops: Sequence[Any]) -> List[BatchResult]:
        """Run ops (BatchOp or tuples: ('get', key), ('put', key, value),
        ('cas', key, value, version), ('del', key[, version]), ('ping',)) with the
        handle's window in flight; one BatchResult per op, per-op errors in .err. Raises
        only for an error of the whole call."""
        h = self._h()
        reqs = [_Req(_batch_op(d)) for d in ops]
        n = len(reqs)
        if n == 0:
            return []
        arr = (KmBatchOp * n)()
        for i, r in enumerate(reqs):
            arr[i] = r.op
        _check(_batch(h, arr, n), "batch")
        out = []
        for i, r in enumerate(reqs):
            o = arr[i]
            res = BatchResult(r.kind, r.key, _as_err(o.err), None, o.out_version, o.latency_ns)
            if r.kind == Op.GET and o.err == Err.OK:
                res.value = ctypes.string_at(o.buf, o.len)
            elif r.kind == Op.GET and o.err == Err.BUFFER:
                try:
                    res.value, res.version = self.get(r.key)
                    res.err = Err.OK
                except KeymapError as e:
                    res.err = e.code
            out.append(res)
        return out

    # -- the handle's state
    @property
    def epoch(self) -> int:
        return _epoch(self._h())

    @property
    def nb_workers(self) -> int:
        return _nb_workers(self._h())

    @property
    def session(self) -> int:
        return _get_session(self._h())

    @session.setter
    def session(self, s: int) -> None:
        _check(_set_session(self._h(), _uint(s, 32, "session")), "set session")

    def worker_of(self, key: Bytes) -> int:
        k = _b(key)
        return _worker_of(self._h(), k, len(k))

    def map_refresh(self) -> None:
        _check(_map_refresh(self._h()), "map refresh")

    def stats(self) -> dict:
        st = KmClientStats()
        _get_stats(self._h(), ctypes.byref(st))
        return {name: getattr(st, name) for name, _ in KmClientStats._fields_}

    def aio(self) -> "AsyncClient":
        """An AsyncClient taking this handle over (this Client is closed, not its handle).
        Only a plain Client: an AsyncClient's pending ops hold its buffers and callback."""
        if isinstance(self, AsyncClient):
            raise ValueError("aio() of an AsyncClient: it is one already")
        a = AsyncClient.__new__(AsyncClient)
        a._adopt(self)
        return a


class AsyncClient(Client):
    """A Client whose a* calls are coroutines on km_submit / km_process: the handle's
    socket is watched with loop.add_reader (add_writer while datagrams wait for room),
    resends and timeouts with loop.call_later. Any number of calls may be awaited at
    once (opts.window of them on the wire). The blocking calls of Client work while no
    async call is pending. Opening blocks (the MAP round trips): use
    `await AsyncClient.connect(...)` to open in a thread from a running loop."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_async()

    @classmethod
    async def connect(cls, *args, **kwargs) -> "AsyncClient":
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: cls(*args, **kwargs))

    def _adopt(self, c: Client) -> None:
        self._c, self._buf = c._c, c._buf
        c._c = None
        self._init_async()

    def _init_async(self) -> None:
        self._loop = None
        self._fd = -1
        self._reqs = {}
        self._next_id = 1
        self._timer = None
        self._soon = None
        self._writing = False
        self._in_process = False
        self._closing = False
        # One C callback for every op of the handle (the op is found by its arg).
        self._done_fn = DONE_FN(self._on_done)

    # -- the loop's side
    def _attach(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return loop
        if self._loop is not None:
            if self._reqs and not self._loop.is_closed():
                raise RuntimeError("keymap: AsyncClient in use by another event loop")
            self._detach()
        self._loop = loop
        self._fd = _async_fd(self._h())
        loop.add_reader(self._fd, self._process)
        return loop

    def _detach(self) -> None:
        loop = self._loop
        if loop is None:
            return
        for h in (self._timer, self._soon):
            if h is not None:
                h.cancel()
        self._timer = self._soon = None
        if not loop.is_closed():
            loop.remove_reader(self._fd)
            if self._writing:
                loop.remove_writer(self._fd)
        self._writing = False
        self._loop = None

    def _kick(self) -> None:
        if self._soon is None and self._loop is not None:
            self._soon = self._loop.call_soon(self._process)

    def _process(self) -> None:
        self._soon = None
        if self._c is None or self._loop is None:
            return
        self._in_process = True
        try:
            rc = _process(self._c)
        finally:
            self._in_process = False
        if self._closing:
            self.close()
            return
        if rc < 0 and rc != Err.SYSTEM:
            # Cannot happen outside a callback: make it visible.
            self._loop.call_exception_handler(
                {"message": "keymap: km_process: %s" % strerror(rc)})
        self._rearm()

    def _rearm(self) -> None:
        loop, c = self._loop, self._c
        if loop is None or c is None:
            return
        want = bool(_async_want_write(c))
        if want != self._writing:
            if want:
                loop.add_writer(self._fd, self._process)
            else:
                loop.remove_writer(self._fd)
            self._writing = want
        ms = _async_timeout_ms(c)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if ms == 0:
            self._kick()
        elif ms > 0:
            self._timer = loop.call_later(ms / 1000.0, self._process)

    def _on_done(self, _op, arg) -> None:
        # Runs inside km_process (on the loop's thread). Never raise into C.
        try:
            r = self._reqs.pop(arg, None)
            if r is None:
                return
            o = r.op
            fut = r.fut
            if r.kind == Op.GET and o.err == Err.BUFFER and not fut.done():
                r.grow(o.len)
                self._reqs[arg] = r
                rc = _submit(self._c, ctypes.byref(o), self._done_fn, arg)
                if rc == Err.OK:
                    return
                del self._reqs[arg]
                o.err = rc
            if fut.done() or fut.get_loop().is_closed():
                return
            if o.err == Err.OK:
                if r.kind == Op.GET:
                    fut.set_result((ctypes.string_at(o.buf, o.len), o.out_version))
                elif r.kind in (Op.PUT, Op.CAS):
                    fut.set_result(o.out_version)
                else:
                    fut.set_result(None)
            else:
                e = error(o.err, r.kind.name.lower())
                if isinstance(e, VersionMismatch):
                    e.current_version = o.out_version
                fut.set_exception(e)
        except BaseException as e:  # pragma: no cover
            try:
                if self._loop is not None:
                    self._loop.call_exception_handler(
                        {"message": "keymap: completion failed", "exception": e})
            except BaseException:
                pass

    def submit(self, op: Any) -> "asyncio.Future":
        """Submit one op (a BatchOp or a batch tuple); a future of what the a* call of
        that op returns."""
        loop = self._attach()
        r = _Req(_batch_op(op))
        r.fut = loop.create_future()
        r.done_fn = self._done_fn
        rid = self._next_id
        self._next_id += 1
        self._reqs[rid] = r
        rc = _submit(self._c, ctypes.byref(r.op), self._done_fn, rid)
        if rc != Err.OK:
            del self._reqs[rid]
            raise error(rc, "submit")
        if not self._in_process:
            self._kick()
        return r.fut

    async def aget(self, key: Bytes) -> Tuple[bytes, int]:
        return await self.submit(BatchOp(Op.GET, key))

    async def aput(self, key: Bytes, value: Bytes) -> int:
        return await self.submit(BatchOp(Op.PUT, key, value))

    async def acas(self, key: Bytes, value: Bytes, version: int) -> int:
        return await self.submit(BatchOp(Op.CAS, key, value, version))

    async def adelete(self, key: Bytes, version: int = 0) -> None:
        return await self.submit(BatchOp(Op.DEL, key, None, version))

    async def aping(self) -> None:
        return await self.submit(BatchOp(Op.PING))

    @property
    def pending(self) -> int:
        """Ops submitted and not completed (km_async_pending)."""
        return _async_pending(self._c) if self._c is not None else 0

    def close(self) -> None:
        """Close the handle; the futures of ops still pending are cancelled."""
        if getattr(self, "_in_process", False):
            self._closing = True  # closed once km_process has returned
            return
        if getattr(self, "_loop", None) is not None:
            self._detach()
        super().close()
        reqs = getattr(self, "_reqs", None)
        if reqs:
            self._reqs = {}
            for r in reqs.values():
                if r.fut is not None and not r.fut.done():
                    r.fut.cancel()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()
        return False
