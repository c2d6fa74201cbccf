"""Safe, cached downloads of pretrained weights (zoo names, URLs, Hugging Face ids).

A file is fetched once into the cache and then read from there with no network. It is streamed to
``<file>.part``, checked (byte count, optional SHA-256, optional ``check``) and only then moved into
place, so the cache never holds a partial or wrong file.

Environment:
    ``DFINE_CACHE``: the cache folder (default ``~/.cache/dfine``).
    ``DFINE_WEIGHTS_URL_BASE``: replaces ``https://github.com/Peterande/storage/releases/download`` in
        zoo URLs (a mirror, or a local server in tests).
    ``DFINE_HF_ENDPOINT``: replaces ``https://huggingface.co`` for Hugging Face downloads.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from .zoo import HF_URL_BASE, OFFICIAL_URL_BASE, WeightsEntry, find_weights

__all__ = [
    "CACHE_ENV",
    "URL_BASE_ENV",
    "HF_ENDPOINT_ENV",
    "DownloadError",
    "cache_dir",
    "download",
    "download_hf_snapshot",
    "fetch_weights",
    "hgnetv2_weights",
    "zoo_url",
]

logger = logging.getLogger(__name__)

CACHE_ENV = "DFINE_CACHE"
URL_BASE_ENV = "DFINE_WEIGHTS_URL_BASE"
HF_ENDPOINT_ENV = "DFINE_HF_ENDPOINT"

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 30.0  # per socket operation: a stalled server counts as a dropped connection
RETRY_DELAY_S = 1.0  # the wait before retry k is k * RETRY_DELAY_S
# Page starts that mean "an HTML error/login page", never a weights file. A bare "<" is not enough:
# a safetensors file starts with its 8-byte header length, whose low byte may be 0x3C.
_HTML_STARTS = (b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"<!--")
_TORCH_SUFFIXES = (".pth", ".pt", ".ckpt")
_WEIGHT_SUFFIXES = (*_TORCH_SUFFIXES, ".safetensors", ".bin", ".onnx", ".engine", ".pkl", ".json")
_HF_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class DownloadError(RuntimeError):
    """A download that failed; the message names the URL, what happened and the fix."""


class _Dropped(Exception):
    """The connection broke after the server answered: worth another attempt."""


def cache_dir() -> Path:
    """The weights cache: ``$DFINE_CACHE`` or ``~/.cache/dfine``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dfine"


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "reason", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _cache_error(folder: Path, err: OSError) -> DownloadError:
    return DownloadError(
        f"cannot write to the weights cache {folder} ({err.strerror or err}); set {CACHE_ENV} to a writable folder"
    )


def _prepare(folder: Path, part: Path) -> None:
    """Create the cache folder and an empty ``.part`` file, or say how to pick a writable cache."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        part.write_bytes(b"")
    except OSError as err:
        raise _cache_error(folder, err) from None


def _write(out: BinaryIO, chunk: bytes, part: Path) -> None:
    try:
        out.write(chunk)
    except OSError as err:  # e.g. a full disk: not a network problem, so no retry
        raise _cache_error(part.parent, err) from None


def _read_chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    try:
        while chunk := response.read(CHUNK_BYTES):
            yield chunk
    except (http.client.HTTPException, OSError) as err:
        raise _Dropped(_first_line(err)) from err


def _total_size(response: http.client.HTTPResponse, have: int) -> int | None:
    """The full file size the server announces (``Content-Range`` of a 206, else ``Content-Length``)."""
    content_range = response.headers.get("Content-Range", "")
    if response.status == 206 and "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return have + int(length) if length else None


def _stream(url: str, part: Path, progress: bool) -> tuple[int, int | None]:
    """One attempt: append to ``part`` (resuming with a Range request) and return (bytes held, expected size)."""
    have = part.stat().st_size
    headers = {"User-Agent": "dfine", **({"Range": f"bytes={have}-"} if have else {})}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as response:
        if have and response.status != 206:  # the server ignored the Range request: start over
            have = 0
        if response.headers.get_content_type() == "text/html":
            raise DownloadError(_html_message(url, part))
        total = _total_size(response, have)
        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.stem, disable=not progress)
        with part.open("ab" if have else "wb") as out, bar:
            for chunk in _read_chunks(response):
                if have == 0 and chunk[:16].lstrip().lower().startswith(_HTML_STARTS):
                    raise DownloadError(_html_message(url, part))
                _write(out, chunk, part)
                have += len(chunk)
                bar.update(len(chunk))
    return have, total


def _html_message(url: str, part: Path) -> str:
    return (
        f"{url}: the server sent an HTML page (an error, login or redirect page), not a weights file; "
        f"check the URL, or download the file by hand and save it as {part.with_suffix('')}"
    )


def _fetch(url: str, part: Path, retries: int, progress: bool) -> None:
    """Fill ``part`` with the whole body, retrying dropped connections; raises :class:`DownloadError`."""
    target = part.with_suffix("")
    answered, have, total, reason = False, 0, None, ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(RETRY_DELAY_S * attempt)
        try:
            have, total = _stream(url, part, progress)
            answered = True
        except urllib.error.HTTPError as err:
            raise DownloadError(
                f"{url}: the server answered HTTP {err.code} {err.reason}; check the URL (or the name in "
                f"`dfine info --weights`), or download the file by hand and save it as {target}"
            ) from None
        except _Dropped as err:
            answered, have, reason = True, part.stat().st_size, str(err)
            continue
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            if not answered:  # never reached the server: offline, DNS or proxy trouble, wrong port
                raise DownloadError(
                    f"cannot reach {url} ({_first_line(err)}); check the network or proxy, "
                    f"or download the file by hand and save it as {target}"
                ) from None
            have, reason = part.stat().st_size, _first_line(err)
            continue
        if total is None or have == total:
            return
        reason = "the connection closed early"
        if have > total:  # more bytes than announced: the appended data is not this file
            part.write_bytes(b"")
    raise DownloadError(
        f"{url}: download incomplete ({have} of {total if total is not None else '?'} bytes, {reason}) after "
        f"{retries + 1} attempts; run again on a steadier connection, or download the file by hand and save it "
        f"as {target}"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _verify(url: str, part: Path, sha256: str | None, check: Callable[[Path], object] | None) -> None:
    if sha256 is not None:
        got = _sha256(part)
        if got != sha256.lower():
            raise DownloadError(
                f"{url}: SHA-256 {got} does not match the expected {sha256.lower()}; the file is corrupt or "
                "was changed upstream: run again, and report it if it persists"
            )
    if check is not None:
        try:
            check(part)
        except Exception as err:  # the caller's check may raise anything; its reason goes into the message
            raise DownloadError(
                f"{url}: the downloaded file fails its check ({_first_line(err)}); it is not the expected "
                "weights file: check the URL"
            ) from err


def download(
    url: str,
    *,
    file_name: str | None = None,
    cache: str | Path | None = None,
    sha256: str | None = None,
    check: Callable[[Path], object] | None = None,
    retries: int = 3,
    progress: bool = True,
) -> Path:
    """Download ``url`` into the cache once and return the local file.

    Args:
        url: http(s) URL of the file.
        file_name: name in the cache (default: the last part of the URL path).
        cache: cache folder (default :func:`cache_dir`).
        sha256: expected hex digest, checked before the file is kept.
        check: called with the complete download before it is kept (e.g. a safe ``torch.load``);
            any exception refuses the file.
        retries: further attempts after a dropped connection (resumed with a Range request when the
            server supports it).
        progress: show a tqdm progress bar.

    Returns:
        The cached file; when it already exists it is returned with no network access.

    Raises:
        DownloadError: on any failure; nothing is left in the cache then.
    """
    name = file_name or urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"download: cannot use {name!r} as a cache file name for {url}; pass file_name='x.pth'")
    folder = Path(cache) if cache is not None else cache_dir()
    target = folder / name
    if target.is_file():
        return target
    part = target.with_name(f"{name}.part")
    _prepare(folder, part)
    logger.info("downloading %s to %s", url, target)
    try:
        _fetch(url, part, retries, progress)
        _verify(url, part, sha256, check)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return target


def download_hf_snapshot(
    repo_id: str,
    files: tuple[str, ...] = ("config.json", "model.safetensors"),
    *,
    cache: str | Path | None = None,
    endpoint: str | None = None,
    progress: bool = True,
) -> Path:
    """Download ``files`` of the Hugging Face model ``repo_id`` (branch ``main``) and return their folder.

    The folder is ``<cache>/hf/<owner>/<name>``. ``endpoint`` defaults to ``$DFINE_HF_ENDPOINT`` or
    ``https://huggingface.co``. Files already in the folder are not fetched again.
    """
    if not _HF_REPO_ID.fullmatch(repo_id):
        raise ValueError(
            f"Hugging Face id {repo_id!r} is not of the form owner/name (e.g. ustc-community/dfine-nano-coco)"
        )
    base = (endpoint or os.environ.get(HF_ENDPOINT_ENV) or HF_URL_BASE).rstrip("/")
    folder = (Path(cache) if cache is not None else cache_dir()) / "hf" / repo_id
    for name in files:
        download(f"{base}/{repo_id}/resolve/main/{name}", file_name=name, cache=folder, progress=progress)
    return folder


def _loads_as_tensors(path: Path) -> None:
    """The check for PyTorch weights: they load with ``weights_only=True`` (no code is run)."""
    import torch  # imported here: listing or locating weights does not need torch

    torch.load(path, map_location="cpu", weights_only=True)


def zoo_url(entry: WeightsEntry) -> str:
    """The download URL of a zoo file, with the official release prefix replaced by ``$DFINE_WEIGHTS_URL_BASE``."""
    base = os.environ.get(URL_BASE_ENV)
    if base and entry.url.startswith(OFFICIAL_URL_BASE):
        return base.rstrip("/") + entry.url[len(OFFICIAL_URL_BASE) :]
    return entry.url


def _fetch_entry(entry: WeightsEntry, cache: str | Path | None, progress: bool) -> Path:
    if entry.hf_repo_id is not None:
        return download_hf_snapshot(entry.hf_repo_id, cache=cache, progress=progress)
    return download(
        zoo_url(entry),
        file_name=entry.file_name,
        cache=cache,
        sha256=entry.sha256,
        check=_loads_as_tensors,
        progress=progress,
    )


def looks_like_local_file(source: str) -> bool:
    """A source that names a local file (a missing one is 'not found', never a zoo name or HF id to download)."""
    if "://" in source:
        return False
    suffix = Path(source).suffix.lower()
    return suffix in _WEIGHT_SUFFIXES or source.startswith((".", "/", "~")) or source.count("/") > 1


def fetch_weights(source: str, *, cache: str | Path | None = None, progress: bool = True) -> Path:
    """A local path for ``source``: an existing path, a zoo name, an http(s) URL or a Hugging Face id.

    Existing paths are returned unchanged. Zoo files land in the cache folder itself, URLs in
    ``<cache>/url/<hash of the URL>/``. Zoo detector/backbone files and URLs ending in ``.pth``/``.pt``
    must load with ``torch.load(weights_only=True)``. Hugging Face ids (``owner/name``) give the
    snapshot folder of :func:`download_hf_snapshot`.
    """
    path = Path(source).expanduser()
    if path.exists():
        return path
    if source.startswith(("http://", "https://")):
        # One folder per URL: two URLs ending in the same file name (best.pth) must not share a cache entry.
        root = Path(cache) if cache is not None else cache_dir()
        folder = root / "url" / hashlib.sha256(source.encode()).hexdigest()[:16]
        check = _loads_as_tensors if urllib.parse.urlsplit(source).path.endswith(_TORCH_SUFFIXES) else None
        return download(source, cache=folder, check=check, progress=progress)
    if looks_like_local_file(source):
        raise FileNotFoundError(f"weights file not found: {path}; check the path, or pass a zoo name or URL")
    if _HF_REPO_ID.fullmatch(source):
        return download_hf_snapshot(source, cache=cache, progress=progress)
    return _fetch_entry(find_weights(source), cache, progress)


def hgnetv2_weights(
    name: str, local_model_dir: str | Path, *, cache: str | Path | None = None, progress: bool = True
) -> Path:
    """The ImageNet weights of HGNetv2 ``name``: in ``local_model_dir`` when there, else downloaded into the cache.

    ``local_model_dir`` is a folder holding ``PPHGNetV2_{name}_stage1.pth`` (as in the official code)
    or the weights file itself.
    """
    entry = find_weights(f"hgnetv2-{name.lower()}")
    local = Path(local_model_dir)
    candidate = local if local.suffix in _TORCH_SUFFIXES else local / entry.file_name
    if candidate.is_file():
        return candidate
    try:
        return _fetch_entry(entry, cache, progress)
    except DownloadError as err:
        raise DownloadError(
            f"{err} (or put it at {candidate}, or set HGNetv2.pretrained: False to start from random weights)"
        ) from None
