"""Error classes, one per exit code. Every message names the file and the problem."""
from __future__ import annotations

import os

EXIT_USAGE = 2  # click's own code for bad command lines
EXIT_BAD_INPUT = 3
EXIT_CORRUPT = 4
EXIT_IO = 5
EXIT_SOME_FAILED = 6  # batch: the run finished, some files failed (recorded in the manifest)


class RawmetaError(Exception):
    """Base: `path: problem`, rendered on one line by the CLI."""

    exit_code = 1

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class BadInputError(RawmetaError):
    """The input is not what the command needs (not a JPEG, unsupported raw, wrong pair)."""

    exit_code = EXIT_BAD_INPUT


class NoMetadataError(BadInputError):
    """A JPEG without rawmeta metadata and no sidecar."""


class CorruptMetadataError(RawmetaError):
    """The metadata is there but damaged: bad CRC, truncated, impossible fields."""

    exit_code = EXIT_CORRUPT


class OutputError(RawmetaError):
    """Cannot write: output exists, directory missing or unwritable, disk full."""

    exit_code = EXIT_IO
