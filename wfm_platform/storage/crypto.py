"""AES-256-GCM envelope encryption of stored objects (encryption at rest).

Each object gets a fresh random 256-bit data key; the data key is wrapped (AES-256-GCM) by the
master key, which comes from WFM_ENCRYPTION_KEY (base64 of 32 bytes) or a Dagster key resource.
The master key never touches the store; rotating it only needs the old key kept for reading
(WFM_ENCRYPTION_PREVIOUS_KEYS).

Object layout (all integers big-endian):

    magic "WFMENC" | version u8 (=1) | chunk_size u32 | key_id_len u8 | key_id (ascii)
    | wrap_nonce 12 | wrapped data key 48 (32 + GCM tag) | nonce_prefix 7          <- header
    | chunk 0 | chunk 1 | ... | last chunk                                           <- body

Why chunks: a multi-GB shard must stream into training without being held in memory and without
releasing unauthenticated bytes. Each chunk is `chunk_size` plaintext bytes sealed with its own
GCM tag; its nonce is nonce_prefix | counter u32 | last-flag u8 and its associated data is the
header, so chunks cannot be reordered, dropped, moved between objects, or the object truncated at
a chunk boundary (the final chunk alone carries last-flag=1; an empty object is one empty final
chunk). This is the "STREAM" construction used by Tink and age.

Wrong key or any flipped bit -> DecryptionError saying which; plaintext objects (written before
encryption was turned on) are read as they are unless `require_encrypted=True` (fail closed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
import os
import struct
from collections.abc import Iterable
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import DecryptionError, PermanentStorageError

log = logging.getLogger(__name__)

MAGIC = b"WFMENC"
VERSION = 1
TAG = 16
KEY_BYTES = 32
DEFAULT_CHUNK = 1 << 20  # 1 MiB plaintext per chunk: 16 bytes of overhead per MiB
_FIXED = struct.Struct(">6sBIB")  # magic, version, chunk_size, key_id_len
_TAIL = 12 + KEY_BYTES + TAG + 7  # wrap nonce, wrapped key, nonce prefix
MAX_HEADER = _FIXED.size + 255 + _TAIL

ENV_KEY = "WFM_ENCRYPTION_KEY"
ENV_PREVIOUS = "WFM_ENCRYPTION_PREVIOUS_KEYS"  # comma-separated base64 keys, for reading after rotation
ENV_REQUIRE = "WFM_ENCRYPTION_REQUIRED"  # "1": refuse to read plaintext objects


def generate_key() -> str:
    """A new random master key, base64 (what WFM_ENCRYPTION_KEY expects)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def parse_key(value: str | bytes, name: str = ENV_KEY) -> bytes:
    """32 raw bytes from base64 text (or raw 32 bytes). Clear error otherwise."""
    if isinstance(value, bytes) and len(value) == KEY_BYTES:
        return value
    text = value.decode() if isinstance(value, bytes) else value
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ValueError(
            f"{name} must be {KEY_BYTES} random bytes in base64 (44 characters); generate one with "
            "`python -c \"from wfm_platform.storage.crypto import generate_key; print(generate_key())\"`"
        )
    return raw


def key_id(key: bytes) -> str:
    """A short public fingerprint of a master key (stored in each header, names the key needed)."""
    return hashlib.sha256(b"wfm-key-id" + key).hexdigest()[:16]


def _read_full(f: BinaryIO, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        b = f.read(n - len(out))
        if not b:
            break
        out += b
    return bytes(out)


class _Header:
    def __init__(self, raw: bytes, chunk_size: int, kid: str, wrap_nonce: bytes, wrapped: bytes, prefix: bytes):
        self.raw, self.chunk_size, self.kid = raw, chunk_size, kid
        self.wrap_nonce, self.wrapped, self.prefix = wrap_nonce, wrapped, prefix

    def nonce(self, counter: int, last: bool) -> bytes:
        return self.prefix + struct.pack(">IB", counter, 1 if last else 0)


class Encryption:
    """Envelope encryption with one current master key (for writing) and older ones (for reading)."""

    def __init__(self, key: str | bytes, previous_keys: Iterable[str | bytes] = (), *,
                 require_encrypted: bool = False, chunk_size: int = DEFAULT_CHUNK):
        self.key = parse_key(key)
        self.key_id = key_id(self.key)
        self.keys = {self.key_id: self.key}
        for k in previous_keys:
            raw = parse_key(k, ENV_PREVIOUS)
            self.keys.setdefault(key_id(raw), raw)
        if not 1 <= chunk_size < 2**31:
            raise ValueError(f"chunk_size {chunk_size} out of range")
        self.chunk_size = chunk_size
        self.require_encrypted = require_encrypted

    def __repr__(self) -> str:  # never print key material
        return f"Encryption(key_id={self.key_id!r}, keys={len(self.keys)}, require_encrypted={self.require_encrypted})"

    @classmethod
    def from_env(cls) -> Encryption | None:
        """From WFM_ENCRYPTION_KEY (+ WFM_ENCRYPTION_PREVIOUS_KEYS, WFM_ENCRYPTION_REQUIRED); None if unset."""
        key = os.environ.get(ENV_KEY, "").strip()
        if not key:
            return None
        prev = [k for k in os.environ.get(ENV_PREVIOUS, "").split(",") if k.strip()]
        return cls(key, prev, require_encrypted=os.environ.get(ENV_REQUIRE, "") in ("1", "true", "yes"))

    # -- writing -------------------------------------------------------------------------------
    def _new_header(self) -> tuple[_Header, bytes]:
        data_key = AESGCM.generate_key(bit_length=256)
        wrap_nonce, prefix = os.urandom(12), os.urandom(7)
        kid = self.key_id.encode()
        fixed = _FIXED.pack(MAGIC, VERSION, self.chunk_size, len(kid)) + kid
        # The wrapped key is bound to the fixed part, so the key id / chunk size cannot be swapped.
        wrapped = AESGCM(self.key).encrypt(wrap_nonce, data_key, fixed)
        raw = fixed + wrap_nonce + wrapped + prefix
        return _Header(raw, self.chunk_size, self.key_id, wrap_nonce, wrapped, prefix), data_key

    def encrypt_stream(self, src: BinaryIO, dst: BinaryIO) -> None:
        header, data_key = self._new_header()
        aead = AESGCM(data_key)
        dst.write(header.raw)
        counter = 0
        cur = _read_full(src, self.chunk_size)
        while True:
            nxt = _read_full(src, self.chunk_size)  # look ahead: the final chunk is sealed as "last"
            last = not nxt
            dst.write(aead.encrypt(header.nonce(counter, last), cur, header.raw))
            if last:
                return
            cur, counter = nxt, counter + 1

    def encrypt_bytes(self, data: bytes) -> bytes:
        out = io.BytesIO()
        self.encrypt_stream(io.BytesIO(data), out)
        return out.getvalue()

    def encrypt_file(self, src: str | os.PathLike, dst: str | os.PathLike) -> None:
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            self.encrypt_stream(fi, fo)

    # -- reading -------------------------------------------------------------------------------
    def _parse_header(self, f: BinaryIO, uri: str) -> _Header:
        fixed = _read_full(f, _FIXED.size)
        if len(fixed) < _FIXED.size:
            raise DecryptionError(f"cannot decrypt {uri}: truncated header (corrupted object)", uri)
        _magic, version, chunk_size, kid_len = _FIXED.unpack(fixed)
        if version != VERSION:
            raise DecryptionError(f"cannot decrypt {uri}: unknown encryption format version {version} "
                                  "(written by a newer wfm-platform?)", uri)
        kid_b = _read_full(f, kid_len)
        tail = _read_full(f, _TAIL)
        if len(kid_b) < kid_len or len(tail) < _TAIL or chunk_size == 0:
            raise DecryptionError(f"cannot decrypt {uri}: truncated header (corrupted object)", uri)
        kid = kid_b.decode("ascii", "replace")
        return _Header(fixed + kid_b + tail, chunk_size, kid, tail[:12], tail[12:12 + KEY_BYTES + TAG],
                       tail[12 + KEY_BYTES + TAG:])

    def _data_key(self, h: _Header, uri: str) -> bytes:
        master = self.keys.get(h.kid)
        if master is None:
            raise DecryptionError(
                f"cannot decrypt {uri}: it was encrypted with master key id {h.kid}, but the configured "
                f"{ENV_KEY} has id {self.key_id} (previous keys: {sorted(set(self.keys) - {self.key_id}) or 'none'}); "
                f"wrong {ENV_KEY}? after a key rotation put the old key in {ENV_PREVIOUS}", uri)
        fixed_len = len(h.raw) - _TAIL
        try:
            return AESGCM(master).decrypt(h.wrap_nonce, h.wrapped, h.raw[:fixed_len])
        except InvalidTag:
            raise DecryptionError(f"cannot decrypt {uri}: wrong {ENV_KEY} or corrupted object "
                                  "(the wrapped data key does not authenticate)", uri) from None

    def reader(self, raw: BinaryIO, uri: str = "") -> BinaryIO:
        """A readable binary stream of the plaintext of `raw` (decrypted chunk by chunk, each chunk
        authenticated before any of its bytes are returned). Plaintext objects pass through unless
        require_encrypted."""
        head = _read_full(raw, len(MAGIC))
        if head != MAGIC:
            if self.require_encrypted:
                raw.close()
                raise PermanentStorageError(
                    f"{uri} is not encrypted, and {ENV_REQUIRE} / require_encrypted refuses plaintext objects; "
                    "re-encrypt it (read with encryption optional and write it back) or turn the requirement off", uri)
            return io.BufferedReader(_Prepended(head, raw))
        return io.BufferedReader(_DecryptingRaw(self, _Prepended(head, raw), uri), buffer_size=self.chunk_size)

    def decrypt_bytes(self, blob: bytes, uri: str = "") -> bytes:
        with self.reader(io.BytesIO(blob), uri) as r:
            return r.read()

    def decrypt_file(self, src: str | os.PathLike, dst: str | os.PathLike, uri: str = "") -> None:
        with open(src, "rb") as fi, self.reader(fi, uri or str(src)) as r, open(dst, "wb") as fo:
            while b := r.read(1 << 20):
                fo.write(b)

    def plaintext_size(self, head: bytes, total: int, uri: str = "") -> int:
        """Plaintext size of an object of `total` bytes that starts with `head` (>= MAX_HEADER bytes
        or the whole object); the stored size for plaintext objects."""
        if not is_encrypted(head):
            return total
        h = self._parse_header(io.BytesIO(head), uri)
        body = total - len(h.raw)
        n_chunks = max(1, -(-body // (h.chunk_size + TAG)))
        return body - n_chunks * TAG


def is_encrypted(head: bytes) -> bool:
    """Whether bytes (the start of an object) carry our encryption header."""
    return head[: len(MAGIC)] == MAGIC


class _Prepended(io.RawIOBase):
    """`head` followed by the rest of `raw` (the magic bytes were already read to sniff the format)."""

    def __init__(self, head: bytes, raw: BinaryIO):
        self._head, self._raw = head, raw

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._raw.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DecryptingRaw(io.RawIOBase):
    def __init__(self, enc: Encryption, raw: BinaryIO, uri: str):
        self._raw, self._uri = raw, uri
        try:
            self._h = enc._parse_header(raw, uri)
            self._aead = AESGCM(enc._data_key(self._h, uri))
        except BaseException:
            raw.close()
            raise
        self._ct = self._h.chunk_size + TAG
        self._pending = _read_full(raw, self._ct)
        self._counter, self._buf, self._done = 0, memoryview(b""), False

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> None:
        cur = self._pending
        self._pending = _read_full(self._raw, self._ct)
        last = not self._pending
        try:
            # memoryview: handing out a 1 MiB chunk in small reads must not copy the rest each time
            self._buf = memoryview(self._aead.decrypt(self._h.nonce(self._counter, last), cur, self._h.raw))
        except InvalidTag:
            raise DecryptionError(
                f"cannot decrypt {self._uri}: chunk {self._counter} does not authenticate: corrupted, "
                f"truncated or tampered object (or wrong {ENV_KEY})", self._uri) from None
        self._counter += 1
        self._done = last

    def readinto(self, b) -> int:
        while not self._buf:
            if self._done:
                return 0
            self._next_chunk()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()

