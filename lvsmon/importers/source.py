"""How an importer reads the files a config includes, without doing I/O itself.

The importers are pure: text in, TOML and a report out. What they need from
outside (an included file, a glob, whether a script exists on this director)
comes through a `Source`; the CLI passes `FileSource`, tests pass `MemorySource`.
"""

from __future__ import annotations

import fnmatch
import glob as globmod
import itertools
import os
import posixpath
from collections.abc import Mapping
from typing import Protocol

from lvsmon.configkit import MAX_FILE_BYTES, FileProblem, read_file

# what one include pattern may match: a glob that names more is an error, not a slow import
MAX_GLOB = 4096


class Source(Protocol):
    def read(self, path: str) -> str:
        """The text of `path`; raises OSError."""
        ...

    def glob(self, pattern: str) -> list[str]:
        """Paths matching `pattern` (shell wildcards), sorted; at most MAX_GLOB + 1."""
        ...

    def executable(self, path: str) -> bool:
        """Whether `path` is an executable file on the director lvsmon will run on."""
        ...

    def readable(self, path: str) -> bool: ...


class FileSource:
    """The real filesystem (the CLI's)."""

    def read(self, path: str) -> str:
        """A regular file of at most MAX_FILE_BYTES: never blocks on a FIFO, never reads a
        device; bytes that are not UTF-8 become U+FFFD (the report shows where)."""
        try:
            data = read_file(path, MAX_FILE_BYTES)
        except FileProblem as exc:
            raise OSError(0, str(exc).removeprefix("cannot read: ")) from None
        return data.decode("utf-8", errors="replace")

    def glob(self, pattern: str) -> list[str]:
        if "\x00" in pattern:
            return []
        return sorted(itertools.islice(globmod.iglob(pattern), MAX_GLOB + 1))

    def executable(self, path: str) -> bool:
        return os.path.isfile(path) and os.access(path, os.X_OK)

    def readable(self, path: str) -> bool:
        return os.path.isfile(path) and os.access(path, os.R_OK)


class MemorySource:
    """Files held in a dict (tests, and a config given as one string)."""

    def __init__(
        self,
        files: Mapping[str, str],
        executables: frozenset[str] = frozenset(),
        readables: frozenset[str] = frozenset(),
    ):
        self.files = dict(files)
        self.executables = executables
        self.readables = readables

    def read(self, path: str) -> str:
        try:
            return self.files[posixpath.normpath(path)]
        except KeyError:
            raise FileNotFoundError(2, "No such file or directory", path) from None

    def glob(self, pattern: str) -> list[str]:
        pattern = posixpath.normpath(pattern)
        found = (p for p in self.files if fnmatch.fnmatchcase(p, pattern))
        return sorted(itertools.islice(found, MAX_GLOB + 1))

    def executable(self, path: str) -> bool:
        return path in self.executables

    def readable(self, path: str) -> bool:
        return path in self.readables or posixpath.normpath(path) in self.files
