"""Schedules on the Hub: bundled schedules, ``load_schedule``, the index, ``best_schedule``, publish.

Fully offline: Hub downloads read a pre-populated cache under ``tmp_path`` with sockets patched
to raise, and online paths (metadata, download, upload) run against a mocked HTTP transport
installed with ``huggingface_hub.set_client_factory``.
"""

from __future__ import annotations

import base64
import json
import socket
import warnings
from pathlib import Path

import httpx2
import huggingface_hub
import pytest
from huggingface_hub import constants as hub_constants
from huggingface_hub.utils import _http as hub_http

from tmpdiff_core import cli
from tmpdiff_core.errors import HubError, HubOfflineError, ScheduleError, ScheduleNotFoundError
from tmpdiff_core.hub import (
    DEFAULT_REPO,
    HubFallbackWarning,
    HubRef,
    best_schedule,
    build_index,
    bundled_dir,
    load_index,
    load_schedule,
    parse_budget,
    parse_hub_ref,
    publish,
    safe_repo_path,
)
from tmpdiff_core.hub import load as hub_load
from tmpdiff_core.hub.index import CARD_END, CARD_START, folder_files, parse_index
from tmpdiff_core.schedule import MAX_SCHEDULE_BYTES, CostInfo, ModelInfo, SamplerInfo, Schedule

REPO = "org/name"
SHA = "a" * 40
OTHER_SHA = "b" * 40
ENDPOINT = "https://hub.test"
FP = "sha256:0123456789abcdef"


# ------------------------------------------------------------------------------------ fixtures
def make_schedule(
    precs: list[str] | str = "bf16",
    steps: int = 4,
    name: str | None = None,
    fingerprint: str | None = FP,
    quality: dict | None = None,
    speedup: float | None = None,
) -> Schedule:
    precisions = [precs] * steps if isinstance(precs, str) else precs
    return Schedule.from_precisions(
        precisions,
        name=name,
        model=ModelInfo(id="toy", fingerprint=fingerprint),
        sampler=SamplerInfo(steps=len(precisions)),
        quality=quality or {},
        cost=CostInfo(speedup=speedup, measured=speedup is not None),
    )


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection or DNS lookup fails the test loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


def populate_cache(cache: Path, repo: str, files: dict[str, str], sha: str = SHA, ref="main"):
    """Write ``files`` as the snapshot ``sha`` of ``repo`` in a Hub cache, with ``refs/<ref>``."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    for path, text in files.items():
        target = folder / "snapshots" / sha / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    if ref:
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(sha)


@pytest.fixture
def cache(tmp_path) -> Path:
    cache = tmp_path / "hub-cache"
    populate_cache(cache, REPO, {"toy/fast.json": make_schedule("fp8", name="toy/fast").to_json()})
    return cache


@pytest.fixture
def mock_hub(monkeypatch):
    """Install a mocked HTTP transport; yields the list of requests it saw.

    Tests set ``mock_hub.handler`` to a function ``request -> httpx2.Response``.
    """

    class Hub:
        requests: list[httpx2.Request] = []
        handler = staticmethod(lambda request: httpx2.Response(404))

    def dispatch(request: httpx2.Request) -> httpx2.Response:
        request.read()
        if request.url.path == "/api/agent-harnesses":
            return httpx2.Response(404)
        Hub.requests.append(request)
        return Hub.handler(request)

    saved = hub_http._GLOBAL_CLIENT_FACTORY
    huggingface_hub.set_client_factory(
        lambda: httpx2.Client(transport=httpx2.MockTransport(dispatch))
    )
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    try:
        yield Hub
    finally:
        huggingface_hub.set_client_factory(saved)


def head_ok(content: bytes, sha: str = SHA, size: int | None = None) -> httpx2.Response:
    return httpx2.Response(
        200,
        headers={
            "X-Repo-Commit": sha,
            "ETag": '"etag-' + str(len(content)) + '"',
            "Content-Length": str(len(content) if size is None else size),
        },
    )


@pytest.fixture
def bundled(tmp_path, monkeypatch) -> Path:
    """A bundled folder of our own (so tests do not depend on what ships)."""
    folder = tmp_path / "bundled"
    make_schedule("fp8", name="toy/fast").save(folder / "toy/fast.json")
    make_schedule("bf16", name="toy/uniform-bf16").save(folder / "toy/uniform-bf16.json")
    build_index(folder)
    monkeypatch.setattr(hub_load, "bundled_dir", lambda: folder)
    return folder


# ------------------------------------------------------------------------------------ references
def test_hf_ref_parsing():
    ref = parse_hub_ref("hf://org/name/toy/fast.json")
    assert ref == HubRef("org/name", "toy/fast.json", None, "model")
    ref = parse_hub_ref(f"hf://org/name/toy/fast.json@{SHA}")
    assert (ref.filename, ref.revision) == ("toy/fast.json", SHA)
    assert str(ref) == f"hf://org/name/toy/fast.json@{SHA}"
    assert parse_hub_ref("hf://org/name/a.json@refs/pr/1").revision == "refs/pr/1"
    ds = parse_hub_ref("hf://datasets/org/name/a.json@v1")
    assert (ds.repo_type, ds.repo_id, ds.revision) == ("dataset", "org/name", "v1")
    assert str(ds) == "hf://datasets/org/name/a.json@v1"


@pytest.mark.parametrize(
    "text",
    [
        "hf://",
        "hf://org",
        "hf://org/name",
        "hf://org/name/",
        "hf://org/name/a.json@",
        "hf://org/name/a.json@a@b",
        "hf://org/name/../x.json",
        "hf://org/name/a/./b.json",
        "hf://org/name/a.pkl",
        "hf://org/name/a\\b.json",
        "hf://bad id/name/a.json",
        "hf://org/na--me/a.json",
        "hf://org/name/a.json@has space",
        "org/name/a.json",
    ],
)
def test_bad_hf_refs(text):
    with pytest.raises(ScheduleError):
        parse_hub_ref(text)


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd.json",
        "../up.json",
        "a/../../up.json",
        "a/./b.json",
        "a//b.json",
        "a\\b.json",
        "C:/x.json",
        "https://evil.test/x.json",
        "file:x.json",
        "a/b.pkl",
        "a\nb.json",
        "",
        None,
        ["a.json"],
    ],
)
def test_unsafe_paths_are_refused(path):
    with pytest.raises(ScheduleError, match="path|must be"):
        safe_repo_path(path)


# ------------------------------------------------------------------------------------ index
def test_build_index_writes_index_and_card(tmp_path):
    folder = tmp_path / "s"
    make_schedule("fp8", name="toy/fast", quality={"ssim": 0.97}, speedup=1.4).save(
        folder / "toy/fast.json"
    )
    make_schedule("bf16").save(folder / "toy/base.json")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "junk.json").write_text("not json")  # hidden: skipped

    index = build_index(folder)
    assert index["index_version"] == 1
    by_name = {e["name"]: e for e in index["schedules"]}
    assert set(by_name) == {"toy/fast", "toy/base"}  # unnamed → path without .json
    fast = by_name["toy/fast"]
    assert fast["path"] == "toy/fast.json"
    assert fast["model"] == {"id": "toy", "fingerprint": FP}
    assert (fast["steps"], fast["precisions"], fast["counts"]) == (4, ["fp8"], {"fp8": 4})
    assert (fast["quality"], fast["speedup"], fast["speedup_measured"]) == (
        {"ssim": 0.97},
        1.4,
        True,
    )
    assert by_name["toy/base"]["quality"] == {} and by_name["toy/base"]["speedup"] is None
    assert json.loads((folder / "index.json").read_text()) == index

    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: tmpdiff") and "[toy/fast](toy/fast.json)" in card
    assert "ssim 0.97" in card and "1.40×" in card and "not measured" in card
    assert "pin" in card.lower()

    # text outside the markers survives a rebuild; an unchanged folder rebuilds byte-identically
    edited = card.replace(CARD_START, "Hand-written notes.\n\n" + CARD_START)
    (folder / "README.md").write_text(edited)
    before = (folder / "index.json").read_bytes()
    build_index(folder)
    assert (folder / "index.json").read_bytes() == before
    assert (folder / "README.md").read_text() == edited
    assert edited.count(CARD_END) == 1


def test_build_index_rejects_invalid_and_duplicates(tmp_path):
    folder = tmp_path / "s"
    make_schedule(name="same").save(folder / "a.json")
    make_schedule(name="same").save(folder / "b.json")
    with pytest.raises(ScheduleError, match="'same' names both"):
        build_index(folder)
    (folder / "b.json").write_text('{"schema_version": 1, "precisions": []}')
    with pytest.raises(ScheduleError, match="b.json: missing required field"):
        build_index(folder)


@pytest.mark.parametrize(
    "bad_path",
    ["../outside.json", "/abs.json", "a\\b.json", "https://x.test/a.json", "a/../b.json"],
)
def test_index_entries_cannot_escape_the_repository(bad_path, tmp_path, bundled):
    index = json.loads((bundled / "index.json").read_text())
    index["schedules"][0]["path"] = bad_path
    with pytest.raises(ScheduleError, match="not a safe path"):
        parse_index(index, "index.json")
    (bundled / "index.json").write_text(json.dumps(index))
    with pytest.raises(ScheduleError, match="not a safe path"):
        load_schedule("toy/fast")


def test_index_entry_symlink_cannot_escape(tmp_path, bundled):
    outside = tmp_path / "outside.json"
    make_schedule().save(outside)
    (bundled / "toy" / "fast.json").unlink()
    (bundled / "toy" / "fast.json").symlink_to(outside)
    with pytest.raises(ScheduleError, match="outside"):
        load_schedule("toy/fast")


def test_index_version_and_fields_are_checked():
    with pytest.raises(ScheduleError, match="newer tmpdiff"):
        parse_index({"index_version": 2, "schedules": []}, "i")
    with pytest.raises(ScheduleError, match="index_version"):
        parse_index({"schedules": []}, "i")
    entry = {"name": "a", "path": "a.json", "model": {}, "steps": 0, "quality": {}}
    with pytest.raises(ScheduleError, match="steps"):
        parse_index({"index_version": 1, "schedules": [entry]}, "i")


def test_shipped_schedules_are_valid_and_indexed():
    folder = bundled_dir()
    assert folder is not None and (folder / "index.json").is_file()
    index, files = folder_files(folder)  # validates every shipped schedule
    for name, data in files.items():
        assert (folder / name).read_bytes() == data, f"run `tmpdiff index {folder}`"
    assert load_index() == index
    names = [e["name"] for e in index["schedules"]]
    assert "refmodel/uniform-bf16-20" in names
    for entry in index["schedules"]:
        schedule = load_schedule(entry["name"])
        assert schedule.steps == entry["steps"] == 20
        # measured, not invented: SSIM is a similarity, and the speed-up follows from the
        # stored per-step cost table
        assert 0 < schedule.quality["ssim"] <= 1
        table = schedule.cost.table
        expected = schedule.steps * table["bf16"] / sum(table[p] for p in schedule.precisions)
        assert schedule.cost.speedup == pytest.approx(expected)


def test_every_package_is_listed():
    """``pyproject.toml`` lists packages (to ship ``schedules/``): none may be forgotten."""
    from setuptools import find_namespace_packages

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        p
        for p in find_namespace_packages(str(root), include=["tmpdiff_core*"])
        if "__pycache__" not in p and any((root / p.replace(".", "/")).glob("*.py"))
    }
    missing = on_disk - set(config["packages"])
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert config["package-dir"]["tmpdiff_schedules"] == "schedules"


# ------------------------------------------------------------------------------------ local/bundled
def test_load_bundled_by_name_and_path(bundled):
    assert load_schedule("toy/fast").precisions == ["fp8"] * 4
    assert load_schedule("toy/fast.json").name == "toy/fast"
    assert load_schedule("toy/uniform-bf16").name == "toy/uniform-bf16"


def test_load_local_path(tmp_path):
    path = make_schedule("fp16").save(tmp_path / "mine.json")
    assert load_schedule(path).precisions == ["fp16"] * 4
    assert load_schedule(str(path)).precisions == ["fp16"] * 4


def test_not_found_lists_close_names(bundled):
    with pytest.raises(ScheduleNotFoundError, match="toy/fast") as info:
        load_schedule("toy/fsat")
    assert isinstance(info.value, FileNotFoundError)
    assert "hf://" in str(info.value)


def test_argument_conflicts(bundled):
    with pytest.raises(ScheduleError, match="Hub references only"):
        load_schedule("toy/fast", revision="main")
    with pytest.raises(ScheduleError, match="not both"):
        load_schedule("toy/fast", repo_id=REPO, filename="a.json")
    with pytest.raises(ScheduleError, match="go together"):
        load_schedule(repo_id=REPO)
    with pytest.raises(ScheduleError, match="give one"):
        load_schedule(f"hf://{REPO}/a.json@{SHA}", revision="main")
    with pytest.raises(ScheduleError, match="download other URLs"):
        load_schedule("https://example.test/a.json")


def test_not_json_schema_and_size_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ScheduleError, match="not valid JSON"):
        load_schedule(bad)
    newer = make_schedule().to_dict() | {"schema_version": 99}
    bad.write_text(json.dumps(newer))
    with pytest.raises(ScheduleError, match="newer tmpdiff"):
        load_schedule(bad)
    bad.write_bytes(b" " * (MAX_SCHEDULE_BYTES + 1))
    with pytest.raises(ScheduleError, match="cap"):
        load_schedule(bad)


def test_model_fingerprint_check(tmp_path):
    path = make_schedule().save(tmp_path / "s.json")
    assert load_schedule(path, model=FP).model.fingerprint == FP
    with pytest.raises(ScheduleError) as info:
        load_schedule(path, model="sha256:ffffffffffffffff")
    assert FP in str(info.value) and "sha256:ffffffffffffffff" in str(info.value)

    torch = pytest.importorskip("torch")
    from tmpdiff_core.fingerprint import model_fingerprint

    module = torch.nn.Linear(4, 4)
    make_schedule(fingerprint=model_fingerprint(module)).save(path)
    load_schedule(path, model=module)
    make_schedule(fingerprint=None).save(path)
    with pytest.warns(UserWarning, match="no model fingerprint"):
        load_schedule(path, model=module)


# ------------------------------------------------------------------------------------ Hub: cache
def test_pinned_commit_loads_from_cache_without_network(cache, no_network):
    schedule = load_schedule(f"hf://{REPO}/toy/fast.json@{SHA}", cache_dir=cache)
    assert schedule.name == "toy/fast"
    kw = load_schedule(repo_id=REPO, filename="toy/fast.json", revision=SHA, cache_dir=cache)
    assert kw.precisions == schedule.precisions


def test_offline_branch_loads_from_cache(cache, offline, no_network):
    assert load_schedule(f"hf://{REPO}/toy/fast.json", cache_dir=cache).name == "toy/fast"
    assert load_schedule(f"hf://{REPO}/toy/fast.json@main", cache_dir=cache).name == "toy/fast"


def test_local_files_only_loads_from_cache(cache, no_network):
    schedule = load_schedule(f"hf://{REPO}/toy/fast.json", cache_dir=cache, local_files_only=True)
    assert schedule.name == "toy/fast"


def test_offline_not_cached_says_how_to_fix(cache, offline, no_network):
    with pytest.raises(HubOfflineError) as info:
        load_schedule(f"hf://{REPO}/toy/missing.json", cache_dir=cache)
    err = info.value
    assert isinstance(err, HubError) and isinstance(err, FileNotFoundError)
    assert "HF_HUB_OFFLINE" in str(err) and "once online" in str(err) and "pin" in str(err)


def test_offline_error_names_cached_commits(tmp_path, offline, no_network):
    cache = tmp_path / "c"
    populate_cache(
        cache, REPO, {"toy/fast.json": make_schedule().to_json()}, sha=OTHER_SHA, ref=None
    )
    with pytest.raises(HubOfflineError, match=f"@{OTHER_SHA}"):
        load_schedule(f"hf://{REPO}/toy/fast.json", cache_dir=cache)


def test_cached_file_is_validated(tmp_path, offline, no_network):
    cache = tmp_path / "c"
    populate_cache(cache, REPO, {"bad.json": "[1, 2", "new.json": '{"schema_version": 7}'})
    with pytest.raises(ScheduleError, match=f"not valid JSON.*hf://{REPO}/bad.json"):
        load_schedule(f"hf://{REPO}/bad.json", cache_dir=cache)
    with pytest.raises(ScheduleError, match="newer tmpdiff"):
        load_schedule(f"hf://{REPO}/new.json", cache_dir=cache)


# ------------------------------------------------------------------------------------ Hub: fallback
def test_offline_falls_back_to_bundled_copy_with_warning(tmp_path, bundled, offline, no_network):
    ref = f"hf://{DEFAULT_REPO}/toy/fast.json"
    with pytest.warns(HubFallbackWarning, match="bundled"):
        schedule = load_schedule(ref, cache_dir=tmp_path / "empty")
    assert schedule.name == "toy/fast"
    with pytest.raises(HubOfflineError):
        load_schedule(ref, cache_dir=tmp_path / "empty", fallback=False)
    with pytest.raises(HubOfflineError):  # a pinned commit never falls back
        load_schedule(f"{ref}@{SHA}", cache_dir=tmp_path / "empty")
    with pytest.raises(HubOfflineError):  # only the official repository has a bundled copy
        load_schedule(f"hf://{REPO}/toy/fast.json", cache_dir=tmp_path / "empty")


def test_unreachable_hub_falls_back_to_bundled(tmp_path, bundled, mock_hub):
    def handler(request):
        raise httpx2.ConnectError("connection refused", request=request)

    mock_hub.handler = handler
    with pytest.warns(HubFallbackWarning, match="unreachable.*bundled"):
        schedule = load_schedule(
            f"hf://{DEFAULT_REPO}/toy/fast.json", cache_dir=tmp_path / "empty", endpoint=ENDPOINT
        )
    assert schedule.name == "toy/fast"
    assert [r.method for r in mock_hub.requests] == ["HEAD"]  # one try, then the cache


def test_unreachable_hub_uses_cached_branch_with_warning(cache, mock_hub):
    mock_hub.handler = lambda request: httpx2.Response(503)
    with pytest.warns(HubFallbackWarning, match="cached copy"):
        schedule = load_schedule(f"hf://{REPO}/toy/fast.json", cache_dir=cache, endpoint=ENDPOINT)
    assert schedule.name == "toy/fast"


# ------------------------------------------------------------------------------------ Hub: online
def test_online_download_then_offline(tmp_path, mock_hub, monkeypatch):
    content = make_schedule("fp8", name="toy/fast").to_json().encode()

    def handler(request):
        assert request.url.path == f"/{REPO}/resolve/main/toy/fast.json"
        if request.method == "HEAD":
            return head_ok(content)
        return httpx2.Response(200, content=content, headers={"Content-Length": str(len(content))})

    mock_hub.handler = handler
    cache = tmp_path / "c"
    with warnings.catch_warnings():
        warnings.simplefilter("error", HubFallbackWarning)
        assert (
            load_schedule(f"hf://{REPO}/toy/fast.json", cache_dir=cache, endpoint=ENDPOINT).name
            == "toy/fast"
        )
    assert "HEAD" in [r.method for r in mock_hub.requests]
    assert "GET" in [r.method for r in mock_hub.requests]
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    mock_hub.requests.clear()
    assert load_schedule(f"hf://{REPO}/toy/fast.json", cache_dir=cache).name == "toy/fast"
    assert load_schedule(f"hf://{REPO}/toy/fast.json@{SHA}", cache_dir=cache).name == "toy/fast"
    assert mock_hub.requests == []


def test_oversized_hub_file_is_not_downloaded(tmp_path, mock_hub):
    mock_hub.handler = lambda request: head_ok(b"", size=MAX_SCHEDULE_BYTES + 1)
    with pytest.raises(ScheduleError, match="not downloaded"):
        load_schedule(f"hf://{REPO}/big.json", cache_dir=tmp_path / "c", endpoint=ENDPOINT)
    assert [r.method for r in mock_hub.requests] == ["HEAD"]


@pytest.mark.parametrize(
    ("status", "code", "match"),
    [
        (404, "EntryNotFound", "no file 'toy/x.json'"),
        (404, "RevisionNotFound", "no revision"),
        (401, "RepoNotFound", "no Hub repository"),
    ],
)
def test_hub_not_found_errors(tmp_path, mock_hub, status, code, match):
    mock_hub.handler = lambda request: httpx2.Response(
        status, headers={"X-Error-Code": code, "X-Error-Message": code}
    )
    with pytest.raises(ScheduleNotFoundError, match=match):
        load_schedule(f"hf://{REPO}/toy/x.json@v1", cache_dir=tmp_path / "c", endpoint=ENDPOINT)


# ------------------------------------------------------------------------------------ best_schedule
@pytest.fixture
def ranked(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "ranked"
    rows = {
        "toy/a": dict(quality={"ssim": 0.99}, speedup=1.1),
        "toy/b": dict(quality={"ssim": 0.97}, speedup=1.35),
        "toy/c": dict(quality={"ssim": 0.95}, speedup=1.6),
        "toy/d": dict(quality={"ssim": 0.90}, speedup=2.0),
        "toy/e": dict(),  # unmeasured: never qualifies
    }
    for name, meta in rows.items():
        make_schedule("fp8", name=name, **meta).save(folder / f"{name}.json")
    make_schedule("fp8", name="other/z", fingerprint="sha256:ffffffffffffffff", speedup=9.0).save(
        folder / "other/z.json"
    )
    build_index(folder)
    monkeypatch.setattr(hub_load, "bundled_dir", lambda: folder)
    return folder


def test_best_schedule_by_speedup_and_quality(ranked):
    assert best_schedule(FP, "speedup>=1.3").name == "toy/b"  # best ssim at >= 1.3x
    assert best_schedule(FP, "ssim>=0.95").name == "toy/c"  # fastest at ssim >= 0.95
    assert best_schedule(FP, "ssim >= 0.5").name == "toy/d"
    assert best_schedule("toy", "speedup>=1.0").name == "toy/a"  # by model id


def test_best_schedule_errors(ranked):
    with pytest.raises(ScheduleNotFoundError, match="best is toy/d at speedup 2"):
        best_schedule(FP, "speedup>=3")
    with pytest.raises(ScheduleNotFoundError, match="no bundled schedule.*Indexed models"):
        best_schedule("sha256:1111111111111111", "speedup>=1")
    with pytest.raises(ScheduleNotFoundError, match="measured psnr"):
        best_schedule(FP, "psnr>=30")
    with pytest.raises(ScheduleError, match="budget"):
        parse_budget("fast please")
    with pytest.raises(ScheduleError, match="source"):
        best_schedule(FP, "speedup>=1", source="elsewhere")


def test_best_schedule_from_hub_uses_the_index_commit(tmp_path, ranked, offline, no_network):
    cache = tmp_path / "c"
    files = {p.relative_to(ranked).as_posix(): p.read_text() for p in ranked.rglob("*.json")}
    populate_cache(cache, REPO, files)
    schedule = best_schedule(FP, "ssim>=0.95", source="hub", repo_id=REPO, cache_dir=cache)
    assert schedule.name == "toy/c"
    assert load_index("hub", repo_id=REPO, cache_dir=cache) == load_index()


def test_best_schedule_from_hub_falls_back_to_bundled_index(tmp_path, ranked, offline, no_network):
    with pytest.warns(HubFallbackWarning, match="index.json bundled"):
        schedule = best_schedule(FP, "speedup>=1.3", source="hub", cache_dir=tmp_path / "empty")
    assert schedule.name == "toy/b"
    with pytest.raises(HubOfflineError):
        best_schedule(
            FP, "speedup>=1.3", source="hub", cache_dir=tmp_path / "empty", fallback=False
        )


# ------------------------------------------------------------------------------------ publish
def commit_lines(request: httpx2.Request) -> list[dict]:
    return [json.loads(line) for line in request.content.decode().splitlines() if line.strip()]


def test_publish_one_commit(tmp_path, mock_hub):
    folder = tmp_path / "pub"
    make_schedule("fp8", name="toy/fast").save(folder / "toy/fast.json")
    make_schedule("bf16").save(folder / "toy/base.json")

    def handler(request):
        path = request.url.path
        if path == "/api/repos/create":
            return httpx2.Response(200, json={"url": f"{ENDPOINT}/{REPO}"})
        if path.startswith(f"/api/models/{REPO}/preupload/"):
            files = json.loads(request.content)["files"]
            return httpx2.Response(
                200,
                json={
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in files
                    ]
                },
            )
        if path == "/api/validate-yaml":  # the card's metadata, checked before the commit
            assert json.loads(request.content)["content"].startswith("---\nlibrary_name: tmpdiff")
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if path.startswith(f"/api/models/{REPO}/branch/"):
            return httpx2.Response(200, json={})
        if path.startswith(f"/api/models/{REPO}/commit/"):
            return httpx2.Response(
                200,
                json={
                    "commitUrl": f"{ENDPOINT}/{REPO}/commit/{SHA}",
                    "commitOid": SHA,
                    "pullRequestUrl": None,
                },
            )
        return httpx2.Response(404)

    mock_hub.handler = handler
    plan = publish(folder, REPO, revision="dev", private=True, endpoint=ENDPOINT)
    assert plan.commit_oid == SHA

    calls = [(r.method, r.url.path) for r in mock_hub.requests]
    create = [r for r in mock_hub.requests if r.url.path == "/api/repos/create"]
    assert len(create) == 1
    body = json.loads(create[0].content)
    assert body["name"] == "name" and body["organization"] == "org"
    assert body.get("visibility") == "private" or body.get("private") is True
    assert ("POST", f"/api/models/{REPO}/branch/dev") in calls
    assert any(p.startswith(f"/api/models/{REPO}/preupload/dev") for _, p in calls)
    commits = [r for r in mock_hub.requests if "/commit/" in r.url.path]
    assert len(commits) == 1 and commits[0].url.path == f"/api/models/{REPO}/commit/dev"

    lines = commit_lines(commits[0])
    assert lines[0]["key"] == "header"
    assert lines[0]["value"]["summary"] == "tmpdiff: publish 2 schedules (toy/base, toy/fast)"
    uploaded = {
        line["value"]["path"]: base64.b64decode(line["value"]["content"])
        for line in lines
        if line["key"] == "file"
    }
    assert set(uploaded) == {"index.json", "README.md", "toy/fast.json", "toy/base.json"}
    assert uploaded["toy/fast.json"] == (folder / "toy/fast.json").read_bytes()
    index = json.loads(uploaded["index.json"])
    assert [e["path"] for e in index["schedules"]] == ["toy/base.json", "toy/fast.json"]
    assert uploaded["index.json"] == (folder / "index.json").read_bytes()  # written locally too


def test_publish_dry_run_uploads_and_writes_nothing(tmp_path, no_network, capsys):
    folder = tmp_path / "pub"
    make_schedule("fp8", name="toy/fast").save(folder / "toy/fast.json")
    assert cli.main(["publish", str(folder), "--repo", REPO, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "toy/fast.json" in out and "index.json" in out and "README.md" in out
    assert "tmpdiff: publish 1 schedule (toy/fast)" in out and "nothing written" in out
    assert not (folder / "index.json").exists()


def test_publish_refuses_invalid_folder(tmp_path, no_network, capsys):
    folder = tmp_path / "pub"
    folder.mkdir()
    (folder / "bad.json").write_text("{}")
    assert cli.main(["publish", str(folder), "--repo", REPO, "--dry-run"]) == 2
    assert "schema_version" in capsys.readouterr().err
    assert cli.main(["publish", str(tmp_path / "nothing"), "--repo", REPO, "--dry-run"]) == 2
    with pytest.raises(ScheduleError, match="ORG/NAME"):
        publish(folder, "not-a-repo", dry_run=True)


def test_index_command_check(tmp_path, capsys):
    folder = tmp_path / "s"
    make_schedule(name="toy/fast").save(folder / "toy/fast.json")
    assert cli.main(["index", str(folder), "--check"]) == 1
    assert cli.main(["index", str(folder)]) == 0
    assert cli.main(["index", str(folder), "--check"]) == 0
    assert "toy/fast" in capsys.readouterr().out
