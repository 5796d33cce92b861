"""libnftables (the library behind `nft`) through ctypes, in JSON mode.

Why not Debian's python3-nftables: it is installed for Debian's own
/usr/bin/python3 only (lvsmon runs in its own virtualenv) and is itself a thin
ctypes wrapper over the same libnftables.so.1 (package libnftables1, which the
`nftables` package already pulls in). Why not `nft -j -f -` in a subprocess: a
fork and exec per change costs milliseconds, and one weight change must land in
well under 10 ms. In-process, a transaction is one call into the library.

A context works in the network namespace of the calling process. Commands are
JSON documents (`{"nftables": [...]}`): one call is one kernel transaction, all
or nothing. Listing uses nft's command syntax with JSON output, because the
JSON `list` commands of libnftables 1.0.6 fail on a cold cache.
"""

from __future__ import annotations

import ctypes
import json
from typing import Any

LIBRARY = "libnftables.so.1"
_OUTPUT_JSON = 1 << 4  # NFT_CTX_OUTPUT_JSON


class NftError(Exception):
    """libnftables refused a command; the message is nft's own error text."""


class Nft:
    """One libnftables context; not thread-safe (one per data plane)."""

    def __init__(self, library: str = LIBRARY) -> None:
        try:
            lib = ctypes.CDLL(library)
        except OSError as exc:
            raise NftError(
                f"cannot load {library} ({exc}): install Debian's libnftables1 (package nftables)"
            ) from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self._lib = lib
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise NftError("nft_ctx_new failed")
        self._ctx: int | None = ctx
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        lib.nft_ctx_output_set_flags(ctx, _OUTPUT_JSON)

    def close(self) -> None:
        if self._ctx is not None:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None

    def _run(self, text: str) -> str:
        if self._ctx is None:
            raise NftError("the libnftables context is closed")
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, text.encode())
        out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
        if rc != 0:
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
            raise NftError(_clean(err) or f"nft failed (rc {rc})")
        return out

    def transaction(self, document: str) -> None:
        """Run a JSON command document (`{"nftables": [...]}`) as one transaction."""
        self._run(document)

    def list(self, command: str) -> list[dict[str, Any]]:
        """`list ...` in nft's syntax; the objects of its JSON output (metainfo dropped)."""
        out = self._run(command)
        if not out.strip():
            return []
        items: list[dict[str, Any]] = json.loads(out).get("nftables", [])
        return [item for item in items if "metainfo" not in item]


def _clean(err: str) -> str:
    """nft's error text without its `internal:0:0-0:` location prefixes and blank lines."""
    lines = [line.replace("internal:0:0-0: ", "").strip() for line in err.splitlines()]
    return "; ".join(line for line in lines if line and not set(line) <= {"^", "~", " "})
