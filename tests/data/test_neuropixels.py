"""The Neuropixels pull, through the AllenSDK's own ``EcephysProjectCache``, without the internet.

``LocalAllenServer`` answers the ecephys warehouse queries on 127.0.0.1 and records every
request, so the AllenSDK's session table (four paged table queries, cached as CSV files) and
its well-known-file query run unmodified; the session NWB files it serves are small HDF5
placeholders, since the pull only moves, checks and describes bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
from pathlib import Path

import h5py
import pytest

from deepmouse.config import AllenConfig, NeuropixelsPullConfig, parse_params
from deepmouse.data.download import _CHUNK_BYTES as BLOCK
from deepmouse.data.download import part_path
from deepmouse.data.ecephys_warehouse import TimedRmaEngine, open_ecephys_cache
from deepmouse.data.neuropixels import (cached_session_files, describe_neuropixels_dir, neuropixels_dir_files,
                                        pull_neuropixels)
from deepmouse.errors import ConfigError, DataError, SourceError
from tests.data.allen_fixtures import (
    QUERY_PATH,
    LocalAllenServer,
    closed_port_url,
    ecephys_release,
    refuse_non_local_addresses,
    write_placeholder_session_nwb,
)

BO = "brain_observatory_1.1"
FC = "functional_connectivity"
# (session id, specimen id, session type, areas of its probes); 716 is VISp too, but not brain_observatory_1.1.
SESSIONS = [
    (719, 7190, BO, ("VISam", "LP")),
    (715, 7150, BO, ("VISp", "VISl")),
    (716, 7160, FC, ("VISp",)),
    (717, 7170, BO, ("VISp", "CA1")),
]


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    refuse_non_local_addresses(monkeypatch)


@pytest.fixture(scope="module")
def session_bytes(tmp_path_factory) -> dict[int, bytes]:
    folder = tmp_path_factory.mktemp("np_sessions")
    return {session_id: write_placeholder_session_nwb(folder / f"{session_id}.nwb", session_id,
                                                      seed=session_id).read_bytes()
            for session_id, *_ in SESSIONS}


@pytest.fixture
def server(session_bytes):
    """The warehouse with every session's NWB file and every probe's LFP file served."""
    with LocalAllenServer() as running:
        running.ecephys = ecephys_release(SESSIONS)
        for session_id, content in session_bytes.items():
            running.serve_session_nwb(session_id, content)
        for probe in running.ecephys["probes"]:
            running.serve_probe_lfp(probe["id"], b"LFP" * 100)
        yield running


def make_cfg(tmp_path: Path, retries: int = 2, timeout_s: float = 5.0, **neuropixels) -> AllenConfig:
    return AllenConfig(cache_dir=str(tmp_path / "ophys_cache"), retries=retries, timeout_s=timeout_s,
                       neuropixels=NeuropixelsPullConfig(**({"cache_dir": str(tmp_path / "np_cache")} | neuropixels)))


def pull(cfg: AllenConfig, out_dir: Path, url: str, lines: list | None = None) -> dict:
    return pull_neuropixels(cfg, out_dir, api_url=url, backoff_s=0.01,
                            progress=(lines.append if lines is not None else lambda line: None))


def expected_ids(areas=None, max_sessions=None) -> list[int]:
    """The reference selection: an explicit loop over the sessions."""
    ids = sorted(session_id for session_id, _, kind, probe_areas in SESSIONS
                 if kind == BO and (areas is None or set(areas) & set(probe_areas)))
    return ids if max_sessions is None else ids[:max_sessions]


def sha256_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def lfp_or_probe_requests(server: LocalAllenServer) -> list[str]:
    lfp_paths = set(server.lfp_links.values())
    return ([path for path, _ in server.requests if path in lfp_paths]
            + [query for query in server.queries() if "EcephysLfpNwb" in query])


# ------------------------------------------------------------------ the whole pull
def test_pull_fetches_brain_observatory_session_files_only(tmp_path, server, session_bytes):
    cfg = make_cfg(tmp_path)
    out_dir, lines = tmp_path / "raw", []
    manifest = pull(cfg, out_dir, server.base_url, lines)

    assert [s["session_id"] for s in manifest["sessions"]] == expected_ids() == [715, 717, 719]
    assert manifest["sessions"][0] == {
        "session_id": 715, "specimen_id": 7150, "session_type": BO, "areas": ["VISl", "VISp"],
        "file": "715.nwb", "source_file": "session_715/session_715.nwb",
        "bytes": len(session_bytes[715]), "sha256": sha256_of(session_bytes[715]),
    }
    assert manifest["sessions"][2]["areas"] == ["LP", "VISam"]  # the channel outside the brain is no area
    assert manifest["source"] == "neuropixels" and manifest["api_url"] == server.base_url
    assert manifest["filters"] == {"session_type": BO, "areas": None, "max_sessions": None}
    assert json.loads((out_dir / "manifest.json").read_text()) == manifest
    for record in manifest["sessions"]:
        cached = Path(cfg.neuropixels.cache_dir) / record["source_file"]
        assert cached.read_bytes() == session_bytes[record["session_id"]]
        assert os.path.samefile(out_dir / record["file"], cached)  # hard link, no second copy
    assert sorted(p.name for p in out_dir.iterdir()) == ["715.nwb", "717.nwb", "719.nwb", "manifest.json"]
    assert "[1/3] session 715 (animal 7150, VISl, VISp)" in lines
    assert not list(Path(cfg.neuropixels.cache_dir).rglob("*.part"))

    # Session NWB files of the selected sessions only: never an LFP file, never its query,
    # never the functional_connectivity session's file.
    downloads = [path for path, _ in server.requests if path != QUERY_PATH]
    assert sorted(downloads) == sorted(server.session_nwb_links[i] for i in (715, 717, 719))
    assert lfp_or_probe_requests(server) == []
    tables = sorted(q.split(",")[0] for q in server.queries() if "model::Ecephys" in q)
    assert tables == ["criteria=model::EcephysChannel", "criteria=model::EcephysProbe",
                      "criteria=model::EcephysSession", "criteria=model::EcephysUnit"]

    # A second pull lists from the AllenSDK's cached tables and reuses every file: no request at all.
    n_requests = len(server.requests)
    assert pull(cfg, out_dir, server.base_url) == manifest
    assert len(server.requests) == n_requests
    assert [p.relative_to(cfg.neuropixels.cache_dir).as_posix() for p in cached_session_files(cfg.neuropixels)] == [
        f"session_{i}/session_{i}.nwb" for i in (715, 717, 719)]


@pytest.mark.parametrize("filters", [
    {"areas": ("VISp",)},
    {"areas": ("VISam",)},
    {"areas": ("VISp", "VISam"), "max_sessions": 2},
    {"max_sessions": 1},
])
def test_areas_and_max_sessions_select_sessions(tmp_path, server, filters):
    manifest = pull(make_cfg(tmp_path, **filters), tmp_path / "raw", server.base_url)

    assert [s["session_id"] for s in manifest["sessions"]] == expected_ids(**filters)
    assert manifest["filters"]["areas"] == (list(filters["areas"]) if "areas" in filters else None)
    downloads = sorted(path for path, _ in server.requests if path != QUERY_PATH)
    assert downloads == sorted(server.session_nwb_links[i] for i in expected_ids(**filters))


def test_no_matching_session_names_the_filter(tmp_path, server):
    with pytest.raises(SourceError, match=r"lists no brain_observatory_1\.1 Neuropixels session matching "
                                          r"data\.allen\.neuropixels\.areas=\['VISrl'\] \(session types listed: "
                                          r"brain_observatory_1\.1, functional_connectivity\)"):
        pull(make_cfg(tmp_path, areas=("VISrl",)), tmp_path / "raw", server.base_url)
    assert not (tmp_path / "raw").exists()


def test_session_table_without_specimen_ids_is_refused(tmp_path, server):
    for row in server.ecephys["sessions"]:
        del row["specimen_id"]
    with pytest.raises(SourceError, match=r"127\.0\.0\.1:\d+: the Neuropixels session table lacks specimen_id "
                                          r"\(animal \(specimen\) id\)"):
        pull(make_cfg(tmp_path), tmp_path / "raw", server.base_url)


# ------------------------------------------------------------------ transfers
def long_session(tmp_path: Path, session_id: int = 715) -> bytes:
    # Longer than two transfer blocks, so that a cut after one block leaves bytes to resume.
    content = write_placeholder_session_nwb(tmp_path / "long.nwb", session_id, n_payload_bytes=3 * BLOCK).read_bytes()
    assert len(content) > 2 * BLOCK
    return content


def test_cut_connection_resumes_with_a_range_request(tmp_path, server):
    content = long_session(tmp_path)
    link = server.serve_session_nwb(715, content)
    server.drop_after[link] = BLOCK
    lines = []
    manifest = pull(make_cfg(tmp_path, max_sessions=1), tmp_path / "raw", server.base_url, lines)

    assert server.ranges_requested(link) == [None, f"bytes={BLOCK}-"]
    assert manifest["sessions"][0]["sha256"] == sha256_of(content)
    assert manifest["sessions"][0]["bytes"] == len(content)
    assert any("resuming at" in line for line in lines)


def test_failed_pull_keeps_the_partial_file_and_the_next_pull_resumes(tmp_path, server):
    content = long_session(tmp_path)
    link = server.serve_session_nwb(715, content)
    server.drop_after[link] = BLOCK
    cfg = make_cfg(tmp_path, retries=0, max_sessions=1)
    cached = Path(cfg.neuropixels.cache_dir) / "session_715" / "session_715.nwb"
    with pytest.raises(SourceError, match=r"session 715 \(.*session_715\.nwb\): .*download failed after 1 attempt: "
                                          r"transfer .* are kept in .*session_715\.nwb\.part and a re-run resumes"):
        pull(cfg, tmp_path / "raw", server.base_url)
    assert not cached.exists() and part_path(cached).stat().st_size == BLOCK
    assert not (tmp_path / "raw").exists()

    manifest = pull(cfg, tmp_path / "raw", server.base_url)
    assert server.ranges_requested(link) == [None, f"bytes={BLOCK}-"]
    assert manifest["sessions"][0]["sha256"] == sha256_of(content) and cached.read_bytes() == content


def test_file_that_is_not_hdf5_is_refused_naming_session_and_file(tmp_path, server):
    link = server.session_nwb_links[715]
    server.corrupt_next[link] = 10  # the HDF5 signature is in the first bytes
    cfg = make_cfg(tmp_path, retries=1, max_sessions=1)
    cached = Path(cfg.neuropixels.cache_dir) / "session_715" / "session_715.nwb"
    with pytest.raises(SourceError, match=r"session 715 \(.*session_715\.nwb\): .*download failed after 2 attempts: "
                                          r".*session_715\.nwb\.part: not a readable HDF5 file"):
        pull(cfg, tmp_path / "raw", server.base_url)
    # Nothing unverified is left where the file belongs, nor as a part to resume from.
    assert not cached.exists() and not part_path(cached).exists()
    assert server.ranges_requested(link) == [None, None]


def test_a_corrupted_transfer_is_retried(tmp_path, server, session_bytes):
    server.corrupt_next[server.session_nwb_links[715]] = 1
    lines = []
    manifest = pull(make_cfg(tmp_path, max_sessions=1), tmp_path / "raw", server.base_url, lines)

    assert manifest["sessions"][0]["sha256"] == sha256_of(session_bytes[715])
    assert any("not a readable HDF5 file" in line and "retry 1 of 2" in line for line in lines)


def test_unreadable_cached_file_is_downloaded_again(tmp_path, server, session_bytes):
    cfg = make_cfg(tmp_path, max_sessions=1)
    cached = Path(cfg.neuropixels.cache_dir) / "session_715" / "session_715.nwb"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(session_bytes[715][:500])
    lines = []
    manifest = pull(cfg, tmp_path / "raw", server.base_url, lines)

    assert any("not a readable HDF5 file" in line and "downloading it again" in line for line in lines)
    assert cached.read_bytes() == session_bytes[715]
    assert manifest["sessions"][0]["sha256"] == sha256_of(session_bytes[715])


def test_downloaded_file_of_another_session_is_refused(tmp_path, server, session_bytes):
    server.files[server.session_nwb_links[715]] = session_bytes[717]
    cfg = make_cfg(tmp_path, retries=0, max_sessions=1)
    cached = Path(cfg.neuropixels.cache_dir) / "session_715" / "session_715.nwb"
    with pytest.raises(SourceError, match=r"session 715 \(.*session_715\.nwb\): .*download failed after 1 attempt: "
                                          r".*session_715\.nwb\.part: holds session '717' \(its NWB identifier\), "
                                          r"not session 715"):
        pull(cfg, tmp_path / "raw", server.base_url)
    assert not cached.exists() and not part_path(cached).exists()


def test_cached_file_of_another_session_is_refused_and_kept(tmp_path, server, session_bytes):
    cfg = make_cfg(tmp_path, max_sessions=1)
    cached = Path(cfg.neuropixels.cache_dir) / "session_715" / "session_715.nwb"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(session_bytes[717])
    with pytest.raises(DataError, match=r"session_715\.nwb: holds session '717' .* not session 715; the AllenSDK "
                                        r"cache keeps session 715 there: move or delete the file and pull again"):
        pull(cfg, tmp_path / "raw", server.base_url)
    assert cached.read_bytes() == session_bytes[717]


def test_cached_hdf5_file_without_identifier_is_downloaded_again(tmp_path, server, session_bytes):
    cfg = make_cfg(tmp_path, max_sessions=1)
    cached = Path(cfg.neuropixels.cache_dir) / "session_715" / "session_715.nwb"
    cached.parent.mkdir(parents=True)
    with h5py.File(cached, "w") as f:
        f["payload"] = [1, 2, 3]
    lines = []
    manifest = pull(cfg, tmp_path / "raw", server.base_url, lines)

    assert any("no 'identifier'" in line and "downloading it again" in line for line in lines)
    assert cached.read_bytes() == session_bytes[715] == (tmp_path / "raw" / "715.nwb").read_bytes()
    assert manifest["sessions"][0]["sha256"] == sha256_of(session_bytes[715])


def test_session_without_an_nwb_file_on_the_warehouse(tmp_path, server):
    del server.session_nwb_links[715]
    with pytest.raises(SourceError, match=r"127\.0\.0\.1:\d+ does not list exactly one session NWB file "
                                          r"\(EcephysNwb\) for session 715"):
        pull(make_cfg(tmp_path, max_sessions=1), tmp_path / "raw", server.base_url)


def test_missing_download_is_a_404_naming_session_and_url(tmp_path, server):
    link = server.session_nwb_links[715]
    del server.files[link]
    with pytest.raises(SourceError, match=rf"session 715 \(.*session_715\.nwb\): .*{link}: HTTP 404"):
        pull(make_cfg(tmp_path, max_sessions=1), tmp_path / "raw", server.base_url)


# ------------------------------------------------------------------ queries: offline, silent, refused
def test_offline_stops_with_one_line_naming_the_host(tmp_path):
    url = closed_port_url()
    out_dir = tmp_path / "raw"
    with pytest.raises(SourceError) as caught:
        pull(make_cfg(tmp_path), out_dir, url)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"could not reach {url.removeprefix('http://')} (")
    assert "Neuropixels session table" in message and "data.neuropixels_dir" in message
    assert not out_dir.exists()


def test_silent_host_times_out_and_is_retried(tmp_path):
    # Listening, never answering: connections open and then nothing comes.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        lines = []
        with pytest.raises(SourceError, match=r"did not answer the request for the Neuropixels session table "
                                              r".* after 2 attempts: no answer within 0\.2 s"):
            pull(make_cfg(tmp_path, retries=1, timeout_s=0.2), tmp_path / "raw", url, lines)
    assert any("retry 1 of 1" in line for line in lines)


def test_server_errors_on_queries_are_retried(tmp_path, server):
    server.status_next[QUERY_PATH] = [503, 502]
    lines = []
    manifest = pull(make_cfg(tmp_path, max_sessions=1), tmp_path / "raw", server.base_url, lines)

    assert [s["session_id"] for s in manifest["sessions"]] == [715]
    assert sum("retry" in line and "HTTP 50" in line for line in lines) == 2


def test_query_refusal_stops_at_once(tmp_path, server):
    server.status_next[QUERY_PATH] = [403]
    with pytest.raises(SourceError, match=r"127\.0\.0\.1:\d+ answered HTTP 403 .* Neuropixels session table"):
        pull(make_cfg(tmp_path), tmp_path / "raw", server.base_url)
    assert len(server.queries()) == 1


def test_cache_is_what_from_warehouse_builds_but_for_the_timed_engine(tmp_path):
    from allensdk.brain_observatory.ecephys.ecephys_project_cache import EcephysProjectCache

    ours = open_ecephys_cache(tmp_path / "ours" / "manifest.json", "http://127.0.0.1:9", timeout_s=3.0)
    theirs = EcephysProjectCache.from_warehouse(scheme="http", host="127.0.0.1:9", fetch_tries=1,
                                                manifest=str(tmp_path / "theirs" / "manifest.json"))
    assert type(ours.fetch_api) is type(theirs.fetch_api)
    assert type(theirs.fetch_api.rma_engine) in type(ours.fetch_api.rma_engine).__mro__
    for name in ("scheme", "host", "rma_prefix", "rma_format", "page_size"):
        assert getattr(ours.fetch_api.rma_engine, name) == getattr(theirs.fetch_api.rma_engine, name), name
    assert ours.fetch_api.rma_engine.request_timeout_s == 3.0
    assert ours.stream_writer is theirs.stream_writer and ours.fetch_tries == theirs.fetch_tries == 1
    assert Path(ours.get_cache_path(None, ours.SESSION_NWB_KEY, 7, 7)).relative_to(tmp_path / "ours") == Path(
        theirs.get_cache_path(None, theirs.SESSION_NWB_KEY, 7, 7)).relative_to(tmp_path / "theirs")


def test_timed_engine_pages_through_a_table(server):
    engine = TimedRmaEngine("http", server.base_url.removeprefix("http://"), request_timeout_s=5.0, page_size=4)
    rows = engine.get_rma_list("criteria=model::EcephysChannel")

    n_channels = len(server.ecephys["channels"])
    assert sorted(row["id"] for row in rows) == sorted(row["id"] for row in server.ecephys["channels"])
    assert len(server.queries()) == math.ceil(n_channels / 4) > 1


# ------------------------------------------------------------------ configuration and local folders
def test_cache_inside_the_output_folder_is_refused(tmp_path):
    cfg = make_cfg(tmp_path, cache_dir=str(tmp_path / "raw" / "cache"))
    with pytest.raises(ConfigError, match=r"data\.allen\.neuropixels\.cache_dir: .* lies inside the pull output"):
        pull(cfg, tmp_path / "raw", closed_port_url())


@pytest.mark.parametrize("url", ["api.brain-map.org", "http://"])
def test_api_url_without_scheme_or_host_is_refused(tmp_path, url):
    with pytest.raises(SourceError, match=rf"'{url}': not an http\(s\) address of the Allen API"):
        pull(make_cfg(tmp_path), tmp_path / "raw", url)


def test_neuropixels_params():
    default = parse_params({}).data
    assert default.allen.neuropixels == NeuropixelsPullConfig()
    assert default.allen.neuropixels.enabled is False and default.neuropixels_dir is None
    given = parse_params({"data": {"allen": {"neuropixels": {"areas": ["VISp"], "max_sessions": 2}}}})
    assert given.data.allen.neuropixels.areas == ("VISp",) and given.data.allen.neuropixels.max_sessions == 2


@pytest.mark.parametrize("neuropixels, match", [
    ({"max_sessions": 0}, r"data\.allen\.neuropixels\.max_sessions: must be positive or null, got 0"),
    ({"areas": ["VISx"]}, r"data\.allen\.neuropixels\.areas: unknown area 'VISx'"),
    ({"cache_dir": "data/allen_cache"}, r"data\.allen\.neuropixels\.cache_dir: must differ from data\.allen\.cache_dir"),
    ({"enabled": "yes"}, r"data\.allen\.neuropixels\.enabled"),
    ({"lfp": True}, r"data\.allen\.neuropixels\.lfp"),
])
def test_bad_neuropixels_params_name_the_key(neuropixels, match):
    with pytest.raises(ConfigError, match=match):
        parse_params({"data": {"allen": {"neuropixels": neuropixels}}})


def test_missing_neuropixels_dir_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.neuropixels_dir: no such folder '.*absent'"):
        parse_params({"data": {"neuropixels_dir": str(tmp_path / "absent")}})


def test_neuropixels_dir_is_described_by_path_bytes_and_mtime(tmp_path, session_bytes):
    folder = tmp_path / "np"
    (folder / "session_715").mkdir(parents=True)
    (folder / "session_715" / "session_715.nwb").write_bytes(session_bytes[715])
    (folder / "session_715" / "probe_7150_lfp.nwb").write_bytes(b"lfp")
    (folder / "717.nwb").write_bytes(session_bytes[717])
    (folder / "notes.txt").write_text("not a session")
    assert parse_params({"data": {"neuropixels_dir": str(folder)}}).data.neuropixels_dir == str(folder)

    described = describe_neuropixels_dir(folder)
    assert described == {"neuropixels_dir": str(folder), "files": [
        {"path": "717.nwb", "bytes": len(session_bytes[717]),
         "mtime_ns": (folder / "717.nwb").stat().st_mtime_ns},
        {"path": "session_715/session_715.nwb", "bytes": len(session_bytes[715]),
         "mtime_ns": (folder / "session_715" / "session_715.nwb").stat().st_mtime_ns},
    ]}
    assert neuropixels_dir_files(folder) == [folder / "717.nwb", folder / "session_715" / "session_715.nwb"]
    with pytest.raises(SourceError, match=r"data\.neuropixels_dir: no session \.nwb files in .*empty"):
        describe_neuropixels_dir(tmp_path / "empty")
