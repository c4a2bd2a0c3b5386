"""Downloads shared by weights and data sets: atomic (temp file, sha256 check, rename), with a short timeout."""

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

TIMEOUT_S = 30.0
_log = logging.getLogger(__name__)


class DownloadError(OSError):
    """A file is missing and could not be downloaded."""


class ChecksumError(DownloadError):
    """A downloaded file does not have the expected sha256 (nothing is left behind)."""


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest, sha256: Sequence[str] = (), *, timeout: float = TIMEOUT_S) -> Path:
    """Downloads `url` to `dest` atomically and returns `dest`.

    `url` may name a zip member after '#' (`.../archive.zip#dir/file.csv`); the member is extracted and checked.
    With `sha256` (one or more accepted digests) a mismatch raises ChecksumError and leaves nothing behind;
    without, the file is kept with a warning that prints its digest. `file://` URLs work (used by the tests).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    base, _, member = url.partition("#")
    temps: list[str] = []

    def temp():
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        temps.append(name)
        return os.fdopen(fd, "wb")

    try:
        with urllib.request.urlopen(base, timeout=timeout) as response, temp() as f:
            shutil.copyfileobj(response, f, 1 << 20)
        if member:
            with zipfile.ZipFile(temps[0]) as archive, archive.open(member) as src, temp() as f:
                shutil.copyfileobj(src, f, 1 << 20)
        actual = sha256_file(temps[-1])
        if sha256 and actual not in sha256:
            raise ChecksumError(
                f"{dest.name} downloaded from {url} has sha256 {actual}, expected {' or '.join(sha256)}; "
                "the download was discarded."
            )
        if not sha256:
            warnings.warn(
                f"{dest.name} downloaded from {url} is unverified (no known sha256); its sha256 is {actual}.",
                stacklevel=3,
            )
        os.replace(temps[-1], dest)
        _log.info("Downloaded %s from %s to %s (sha256 %s).", dest.name, url, dest, actual)
        return dest
    except (OSError, zipfile.BadZipFile, KeyError) as e:  # KeyError: no such zip member
        if isinstance(e, DownloadError):
            raise
        raise DownloadError(f"could not download {url} to {dest}: {type(e).__name__}: {e}") from e
    finally:
        for name in temps:
            if os.path.exists(name):
                os.remove(name)
