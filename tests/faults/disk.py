"""A small filesystem of its own for a data directory, so that it can be filled up.

A loop-mounted ext4 image (real fsync, no blocks reserved for root, since the server
runs as root here); a tmpfs where loop devices are missing. Both need root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


def _sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


@contextlib.contextmanager
def small_filesystem(mount_point: Path, size_mb: int) -> Iterator[str]:
    """``mount_point`` as a filesystem of ``size_mb``; yields its kind ("ext4" or "tmpfs")."""
    if os.geteuid() != 0:
        raise PermissionError("mounting a small filesystem for the disk-full fault needs root")
    mount_point.mkdir(parents=True, exist_ok=True)
    image = mount_point.with_name(mount_point.name + ".img")
    kind = "ext4"
    with open(image, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    made = _sh("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
    if made.returncode != 0 or _sh("mount", "-o", "loop", str(image), str(mount_point)).returncode:
        kind = "tmpfs"
        mounted = _sh("mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount_point))
        if mounted.returncode != 0:
            image.unlink(missing_ok=True)
            raise OSError(f"cannot mount a small filesystem: {mounted.stderr.strip()}")
    try:
        yield kind
    finally:
        if _sh("umount", str(mount_point)).returncode != 0:
            _sh("umount", "-l", str(mount_point))  # a process still holds it: detach
        image.unlink(missing_ok=True)


def fill(directory: Path) -> tuple[Path, int]:
    """Write a file in ``directory`` until the filesystem is full: (its path, bytes written)."""
    filler = directory / "filler"
    written = 0
    chunk = b"\0" * (256 * 1024)
    with open(filler, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 4 or 1]
    return filler, written
