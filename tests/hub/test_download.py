"""The cached downloader, against a local HTTP server only (no internet)."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from dfine.hub import download as dl
from dfine.hub.download import DownloadError, download, download_hf_snapshot, fetch_weights
from dfine.hub.zoo import UnknownWeightsError


@dataclass
class Route:
    """What the server sends for one path; ``drops`` first answers stop halfway through the body."""

    body: bytes
    content_type: str = "application/octet-stream"
    ranges: bool = True
    drops: int = 0
    served: int = 0


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        server.requests.append((self.path, self.headers.get("Range")))
        route = server.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        start, range_header = 0, self.headers.get("Range")
        if range_header and route.ranges:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(route.body) - 1}/{len(route.body)}")
        else:
            self.send_response(200)
        payload = route.body[start:]
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        route.served += 1
        if route.served <= route.drops:
            payload = payload[: len(payload) // 2]  # then the connection closes: a dropped download
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    routes: dict[str, Route]
    requests: list[tuple[str, str | None]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.routes, httpd.requests = {}, []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    if thread.is_alive():
        httpd.stop()


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every test gets its own cache, no retry waits, and no way to reach the real release hosts."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DFINE_CACHE", str(cache))
    monkeypatch.setenv("DFINE_WEIGHTS_URL_BASE", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("DFINE_HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(dl, "RETRY_DELAY_S", 0.0)
    return cache


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


WEIGHTS = _torch_bytes({"w": torch.arange(3000, dtype=torch.float32)})


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_first_download_then_cache_hit_without_network(server, isolated):
    server.routes["/w/model.pth"] = Route(WEIGHTS)
    path = download(f"{server.url}/w/model.pth", progress=False)
    assert path == isolated / "model.pth" and path.read_bytes() == WEIGHTS
    server.stop()
    assert download(f"{server.url}/w/model.pth", progress=False) == path
    assert len(server.requests) == 1


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed", "restarted"])
def test_dropped_connection_is_retried(server, isolated, ranges):
    server.routes["/model.pth"] = Route(WEIGHTS, ranges=ranges, drops=1)
    path = fetch_weights(f"{server.url}/model.pth", progress=False)
    assert path.read_bytes() == WEIGHTS and _files(isolated) == ["model.pth"]
    assert len(server.requests) == 2
    assert server.requests[1][1] == f"bytes={len(WEIGHTS) // 2}-"  # the retry asked for the rest


def test_body_truncated_every_time_leaves_nothing(server, isolated):
    server.routes["/model.pth"] = Route(WEIGHTS, drops=100)
    with pytest.raises(DownloadError, match=r"incomplete .* after 3 attempts") as info:
        download(f"{server.url}/model.pth", retries=2, progress=False)
    assert f"{server.url}/model.pth" in str(info.value) and "\n" not in str(info.value)
    assert len(server.requests) == 3
    assert _files(isolated) == []


def test_http_404_names_the_url(server, isolated):
    with pytest.raises(DownloadError, match=r"/missing.pth: the server answered HTTP 404"):
        download(f"{server.url}/missing.pth", progress=False)
    assert _files(isolated) == []


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream"])
def test_html_page_is_refused(server, isolated, content_type):
    server.routes["/model.pth"] = Route(b"\n<!DOCTYPE html><html><body>Sign in</body></html>", content_type)
    with pytest.raises(DownloadError, match="HTML page"):
        download(f"{server.url}/model.pth", progress=False)
    assert _files(isolated) == []


def test_sha256_mismatch_is_refused(server, isolated):
    server.routes["/model.pth"] = Route(WEIGHTS)
    with pytest.raises(DownloadError, match=f"SHA-256 .* does not match the expected {'ab' * 32}"):
        download(f"{server.url}/model.pth", sha256="AB" * 32, progress=False)
    assert _files(isolated) == []


def test_sha256_match_is_kept(server):
    import hashlib

    server.routes["/model.pth"] = Route(WEIGHTS)
    path = download(f"{server.url}/model.pth", sha256=hashlib.sha256(WEIGHTS).hexdigest(), progress=False)
    assert path.read_bytes() == WEIGHTS


def test_file_that_fails_the_weights_only_check_is_refused(server, isolated):
    server.routes["/model.pth"] = Route(bytes(range(256)) * 8)
    with pytest.raises(DownloadError, match="fails its check"):
        fetch_weights(f"{server.url}/model.pth", progress=False)
    assert _files(isolated) == []


def test_offline_names_url_and_manual_path(isolated):
    url = f"http://127.0.0.1:{_closed_port()}/dfinev1.0/dfine_s_coco.pth"
    with pytest.raises(DownloadError, match="cannot reach") as info:
        download(url, progress=False)
    message = str(info.value)
    assert url in message and str(isolated / "dfine_s_coco.pth") in message and "\n" not in message
    assert _files(isolated) == []


def test_unwritable_cache_names_folder_and_variable(server, monkeypatch, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DFINE_CACHE", str(blocker / "cache"))
    server.routes["/model.pth"] = Route(WEIGHTS)
    with pytest.raises(DownloadError, match=r"a_file/cache .*set DFINE_CACHE to a writable folder"):
        download(f"{server.url}/model.pth", progress=False)
    assert server.requests == []


def test_zoo_name_downloads_from_the_overridden_release_base(server, monkeypatch, isolated):
    monkeypatch.setenv("DFINE_WEIGHTS_URL_BASE", f"{server.url}/mirror/")
    server.routes["/mirror/dfinev1.0/dfine_n_coco.pth"] = Route(WEIGHTS)
    path = fetch_weights("dfine-n-coco", progress=False)
    assert path == isolated / "dfine_n_coco.pth" and path.read_bytes() == WEIGHTS


def test_unknown_zoo_name_suggests_the_right_one():
    with pytest.raises(UnknownWeightsError, match="did you mean dfine-m-obj2coco"):
        fetch_weights("dfine-m-obj2cooc")


def test_missing_local_file_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        fetch_weights("weights/model.pth")
    local = tmp_path / "mine.pth"
    local.write_bytes(WEIGHTS)
    assert fetch_weights(str(local)) == local


def test_hf_snapshot_from_the_local_server(server, monkeypatch, isolated):
    monkeypatch.setenv("DFINE_HF_ENDPOINT", server.url)
    base = "/ustc-community/dfine-nano-coco/resolve/main"
    server.routes[f"{base}/config.json"] = Route(b'{"model_type": "d_fine"}', "application/json")
    server.routes[f"{base}/model.safetensors"] = Route(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + bytes(64))
    folder = fetch_weights("ustc-community/dfine-nano-coco", progress=False)
    assert folder == isolated / "hf" / "ustc-community" / "dfine-nano-coco"
    assert _files(folder) == ["config.json", "model.safetensors"]
    assert fetch_weights("dfine-n-coco-hf", progress=False) == folder  # the zoo entry: same cache, no request
    assert len(server.requests) == 2
    other = download_hf_snapshot("ustc-community/dfine-nano-coco", ("config.json",), cache=isolated / "b",
                                 endpoint=server.url, progress=False)  # fmt: skip
    assert _files(other) == ["config.json"]


def test_hgnetv2_pretrained_prefers_local_dir_then_downloads(server, monkeypatch, tmp_path, isolated):
    from dfine.engine.setup import load_pretrained_backbone
    from dfine.model.hgnetv2 import HGNetv2

    def b0() -> HGNetv2:
        return HGNetv2("B0", use_lab=True, freeze_at=-1, freeze_norm=False)

    source = b0()
    local_dir = tmp_path / "weight" / "hgnetv2"
    local_dir.mkdir(parents=True)
    torch.save(source.state_dict(), local_dir / "PPHGNetV2_B0_stage1.pth")
    target = b0()
    load_pretrained_backbone(target, local_dir)  # the release base is a closed port: no network was needed
    assert torch.equal(target.stem.stem1.conv.weight, source.stem.stem1.conv.weight)

    monkeypatch.setenv("DFINE_WEIGHTS_URL_BASE", server.url)
    server.routes["/dfinev1.0/PPHGNetV2_B0_stage1.pth"] = Route(_torch_bytes(source.state_dict()))
    target = b0()
    load_pretrained_backbone(target, tmp_path / "empty")
    assert torch.equal(target.stem.stem1.conv.weight, source.stem.stem1.conv.weight)
    assert _files(isolated) == ["PPHGNetV2_B0_stage1.pth"]


def test_hgnetv2_download_failure_says_where_to_put_the_file(tmp_path):
    with pytest.raises(DownloadError, match=r"cannot reach .*PPHGNetV2_B2_stage1.pth.*pretrained: False") as info:
        dl.hgnetv2_weights("B2", tmp_path / "weight", progress=False)
    assert str(tmp_path / "weight" / "PPHGNetV2_B2_stage1.pth") in str(info.value)
