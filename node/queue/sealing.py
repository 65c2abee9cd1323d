"""Originals at rest (spool `incoming/` and `quarantine/`) are sealed: AES-256-GCM in chunks.

The received file is PHI until a worker has de-identified it, and a quarantined one stays PHI
for its whole retention; sealed, a copy of the spool (a backup, a disk sent for repair) shows
nothing without the node secret. The clean copy in `clean/` is de-identified and stays plain.

Format (streaming, so that neither writing nor reading needs the instance twice in memory)::

    header   b"DNSEAL1\\0" | 16-byte random salt
    chunk    4-byte big-endian length of what follows | AES-GCM ciphertext + 16-byte tag
    ...      the last chunk carries the final flag (an empty one if need be)

The file key is HKDF-SHA256(node secret, salt, label "deid-node spool originals v1"): one key
per file, so the nonce can be the chunk index (with the final flag). Every chunk authenticates
the header, its index and whether it is the last, so chunks cannot be reordered, dropped,
swapped between files or cut off at a chunk boundary without the tag failing.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"DNSEAL1\0"
_SALT_BYTES = 16
HEADER_BYTES = len(MAGIC) + _SALT_BYTES
_LABEL = b"deid-node spool originals v1"
_TAG_BYTES = 16
_LENGTH = struct.Struct(">I")
CHUNK_BYTES = 1024 * 1024  # plaintext per chunk: a slice of the received buffer, encrypted as it is written


class SealBroken(Exception):
    """The file is not a sealed original, was sealed under another secret, or was altered."""


class Sealer:
    """Seals and opens spool originals with keys derived from the node secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _cipher(self, salt: bytes) -> AESGCM:
        return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_LABEL).derive(self._secret))

    def seal(self, fd: int, parts: Iterable[bytes | memoryview]) -> int:
        """Write `parts`, one after the other, sealed to `fd`; returns the bytes written."""
        salt = os.urandom(_SALT_BYTES)
        header = MAGIC + salt
        cipher = self._cipher(salt)
        written = _write_all(fd, header)
        pieces = list(_slices(parts))
        for index, piece in enumerate(pieces):
            sealed = cipher.encrypt(_nonce(index, index == len(pieces) - 1), piece,
                                    _aad(header, index, index == len(pieces) - 1))
            written += _write_all(fd, _LENGTH.pack(len(sealed)))
            written += _write_all(fd, sealed)
        return written

    def open(self, path: Path) -> BinaryIO:
        """The original at `path`, decrypted into memory, as a seekable binary file."""
        with path.open("rb") as sealed:
            header = sealed.read(HEADER_BYTES)
            if len(header) != HEADER_BYTES or not header.startswith(MAGIC):
                raise SealBroken("not a sealed spool file")
            cipher = self._cipher(header[len(MAGIC):])
            size = path.stat().st_size
            plain = bytearray(size - HEADER_BYTES)  # an upper bound; trimmed below (in place)
            filled = index = 0
            final = False
            while not final:
                length_field = sealed.read(_LENGTH.size)
                if len(length_field) != _LENGTH.size:
                    raise SealBroken("sealed file cut short")
                (length,) = _LENGTH.unpack(length_field)
                chunk = sealed.read(length)
                final = sealed.tell() == size
                if len(chunk) != length or length < _TAG_BYTES:
                    raise SealBroken("sealed file cut short")
                try:
                    piece = cipher.decrypt(_nonce(index, final), chunk, _aad(header, index, final))
                except InvalidTag as exc:
                    raise SealBroken("sealed file does not open with this node's secret, or was altered") from exc
                plain[filled:filled + len(piece)] = piece
                filled += len(piece)
                index += 1
        del plain[filled:]
        return cast(BinaryIO, _MemoryFile(plain))  # what pydicom reads: read, seek, tell


def _slices(parts: Iterable[bytes | memoryview]) -> Iterator[memoryview]:
    """The parts cut in pieces of at most CHUNK_BYTES (views, not copies); at least one piece."""
    empty = True
    for part in parts:
        view = memoryview(part).cast("B")
        for start in range(0, len(view), CHUNK_BYTES):
            empty = False
            yield view[start:start + CHUNK_BYTES]
    if empty:
        yield memoryview(b"")


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\1" if final else b"\0")


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + index.to_bytes(8, "big") + (b"\1" if final else b"\0")


def _write_all(fd: int, data: bytes | memoryview) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return len(data)


class _MemoryFile(io.RawIOBase):
    """A read-only, seekable file over a buffer, without copying it (io.BytesIO would)."""

    def __init__(self, buffer: bytearray) -> None:
        self._view = memoryview(buffer)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        count = max(0, min(len(target), len(self._view) - self._position))
        memoryview(target).cast("B")[:count] = self._view[self._position:self._position + count]
        self._position += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position
