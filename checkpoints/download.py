"""Downloads shared by weights and data sets: atomic (temp file, sha256 check, rename), with a short timeout.

`download(url, dest, sha256)` writes one file; `cached_download(url, cache_root, sha256)` keeps it in a cache
keyed by the full URL (and the expected digest), records the file's sha256 next to it on first fetch and checks
it again on every reuse, so a cache entry is never another URL's file nor a file changed after download.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.request
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

TIMEOUT_S = 30.0
SIDECAR_SUFFIX = ".sha256.json"
_log = logging.getLogger(__name__)


class DownloadError(OSError):
    """A file is missing and could not be downloaded."""


class ChecksumError(DownloadError):
    """A file does not have the expected sha256 (a fresh download is discarded; a cache entry is reported)."""


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def digest_matches(actual: str, expected: str) -> bool:
    """`expected` is a full sha256, or a published prefix of at least 8 hex digits (torch.hub's file names)."""
    expected = expected.lower()
    return actual == expected or (8 <= len(expected) < 64 and actual.startswith(expected))


def published_digest(url: str) -> str | None:
    """The sha256 prefix a torch.hub-style file name publishes (`jx_mixer_b16_224-76587d61.pth` -> '76587d61')."""
    match = re.search(r"-([0-9a-f]{8,64})\.(?:pth|pt|bin|pth\.tar|ckpt)$", url.partition("#")[0])
    return match[1] if match else None


def download(url: str, dest, sha256: Sequence[str] = (), *, timeout: float = TIMEOUT_S) -> Path:
    """Downloads `url` to `dest` atomically and returns `dest`.

    `url` may name a zip member after '#' (`.../archive.zip#dir/file.csv`); the member is extracted and checked.
    With `sha256` (one or more accepted digests, or published prefixes of >= 8 hex digits) a mismatch raises
    ChecksumError and leaves nothing behind; without, the file is kept with a warning that prints its digest. A
    body shorter than the server's Content-Length raises DownloadError. `file://` URLs work (used by the tests).
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
            expected_size = response.headers.get("Content-Length")
            # http.client returns a short body without error when the server closes early: count the bytes.
            if expected_size is not None and f.tell() != int(expected_size):
                raise DownloadError(
                    f"could not download {url}: the connection closed after {f.tell()} of {expected_size} bytes"
                )
        if member:
            with zipfile.ZipFile(temps[0]) as archive, archive.open(member) as src, temp() as f:
                shutil.copyfileobj(src, f, 1 << 20)
        actual = sha256_file(temps[-1])
        if sha256 and not any(digest_matches(actual, d) for d in sha256):
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


def cache_entry(url: str, cache_root, sha256: str | None = None) -> Path:
    """Where `cached_download` keeps `url`: `<cache_root>/<hash of the URL and digest>/<file name>`.

    Two URLs ending in the same file name, or one URL expected with two different digests, never share an entry.
    """
    key = hashlib.sha256(f"{url}\n{(sha256 or '').lower()}".encode()).hexdigest()[:24]
    name = url.partition("#")[2].rsplit("/", 1)[-1] or url.partition("#")[0].rstrip("/").rsplit("/", 1)[-1]
    return Path(cache_root) / key / (name or "download")


def verify_cached(path, sha256: str | None = None) -> str:
    """Re-checks a cache entry against the digest recorded when it was fetched (and `sha256`, when known);
    returns the digest. Raises ChecksumError naming the file when it changed."""
    path = Path(path)
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    recorded = json.loads(sidecar.read_text())["sha256"]
    actual = sha256_file(path)
    if actual != recorded or (sha256 and not digest_matches(actual, sha256)):
        expected = recorded if actual != recorded else sha256
        raise ChecksumError(
            f"the cached file {path} has sha256 {actual} but {expected} was recorded when it was downloaded: "
            f"it changed on disk. Delete {path.parent} to download it again."
        )
    return actual


def cached_download(url: str, cache_root, sha256: str | None = None, *, timeout: float = TIMEOUT_S) -> Path:
    """`url`'s file in the cache, downloaded (atomically, checked against `sha256` when given) on first use and
    re-checked against its recorded sha256 on every later use."""
    dest = cache_entry(url, cache_root, sha256)
    sidecar = dest.with_name(dest.name + SIDECAR_SUFFIX)
    if dest.exists() and sidecar.exists():
        verify_cached(dest, sha256)
        return dest
    download(url, dest, (sha256,) if sha256 else (), timeout=timeout)
    # The sidecar is written after the file: a file without one (an interrupted first fetch) is fetched again.
    record = json.dumps({"url": url, "sha256": sha256_file(dest)}, indent=1)
    fd, name = tempfile.mkstemp(prefix=f".{sidecar.name}.", suffix=".part", dir=dest.parent)
    with os.fdopen(fd, "w") as f:
        f.write(record)
    os.replace(name, sidecar)
    return dest
