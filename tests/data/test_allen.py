"""The Allen pull, through the AllenSDK's own cache, without the internet.

Two stand-ins keep the tests offline:

- ``ListingCache`` is the real AllenSDK ``BrainObservatoryCache`` with only its
  network listing replaced: the given Allen API rows go through the AllenSDK's
  own filtering and simplification. Cache paths, the NWB file query and file
  access are the AllenSDK's.
- ``LocalAllenServer`` answers the Allen API queries and serves the files on
  127.0.0.1, so an unmodified ``BrainObservatoryCache`` pointed at it (its
  ``base_uri``) runs end to end; pointed at a closed port it is offline.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
from allensdk.core.brain_observatory_cache import BrainObservatoryCache

from deepmouse.config import AllenConfig, parse_params
from deepmouse.data.allen import pull_allen
from deepmouse.data.download import _CHUNK_BYTES as BLOCK
from deepmouse.data.download import host_of
from deepmouse.data.events import read_events, write_events
from deepmouse.data.nwb import read_session
from deepmouse.errors import ConfigError, DataError, NwbLayoutError, SourceError
from tests.data.allen_fixtures import (
    QUERY_PATH,
    LocalAllenServer,
    closed_port_url,
    refuse_non_local_addresses,
    raw_experiment,
    write_tiny_events,
    write_tiny_session,
)

# (id, area, Cre line, depth); 504 is a session A experiment, without natural scenes.
SESSIONS = [
    (503, "VISl", "Rorb-IRES2-Cre", 275),
    (501, "VISp", "Cux2-CreERT2", 175),
    (502, "VISp", "Cux2-CreERT2", 275),
]
SESSION_A = (504, "VISp", "Cux2-CreERT2", 175)


class ListingCache(BrainObservatoryCache):
    """The AllenSDK cache, with the experiment listing given rather than fetched."""

    def __init__(self, manifest_file: Path, experiments: list[dict], base_uri: str):
        super().__init__(manifest_file=str(manifest_file), base_uri=base_uri)
        self.experiments = experiments
        self.listing_calls: list[dict] = []

    def get_ophys_experiments(self, **filters):
        self.listing_calls.append(filters)
        return self.api.filter_ophys_experiments(copy.deepcopy(self.experiments), simple=True, **filters)


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    refuse_non_local_addresses(monkeypatch)


@pytest.fixture(scope="module")
def session_bytes(tmp_path_factory) -> dict[int, bytes]:
    folder = tmp_path_factory.mktemp("sessions")
    return {
        experiment_id: write_tiny_session(folder / f"{experiment_id}.nwb", experiment_id, area, cre, depth,
                                          seed=experiment_id).read_bytes()
        for experiment_id, area, cre, depth in SESSIONS
    }


@pytest.fixture(scope="module")
def events_bytes(tmp_path_factory) -> dict[int, bytes]:
    """Events files that fit the sessions of ``session_bytes`` (same writer, same seeds)."""
    folder = tmp_path_factory.mktemp("events")
    contents = {}
    for experiment_id, area, cre, depth in SESSIONS:
        session = write_tiny_session(folder / f"{experiment_id}.nwb", experiment_id, area, cre, depth, seed=experiment_id)
        contents[experiment_id] = write_tiny_events(session, seed=experiment_id).read_bytes()
    return contents


@pytest.fixture
def raw_rows() -> list[dict]:
    return [raw_experiment(*session) for session in SESSIONS] + [
        raw_experiment(*SESSION_A, session_type="three_session_A")
    ]


@pytest.fixture
def server():
    with LocalAllenServer() as running:
        yield running


def make_cfg(tmp_path: Path, **overrides) -> AllenConfig:
    return AllenConfig(**({"cache_dir": str(tmp_path / "cache"), "retries": 2, "timeout_s": 5.0} | overrides))


def listing_factory(raw_rows, base_uri, made: list | None = None):
    def factory(manifest_file):
        cache = ListingCache(manifest_file, raw_rows, base_uri)
        if made is not None:
            made.append(cache)
        return cache
    return factory


def place_in_cache(cfg: AllenConfig, experiment_id: int, content: bytes) -> Path:
    path = Path(cfg.cache_dir) / "ophys_experiment_data" / f"{experiment_id}.nwb"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def place_events_in_cache(cfg: AllenConfig, experiment_id: int, content: bytes) -> Path:
    path = Path(cfg.cache_dir) / "ophys_experiment_events" / f"{experiment_id}_events.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def misfit_events_bytes(tmp_path: Path) -> bytes:
    """An events file of 2 cells x 5 frames, which fits no tiny session (3 cells x 90 frames)."""
    return write_events(tmp_path / "misfit_events.npz", np.zeros((2, 5))).read_bytes()


def sha256_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def selected_ids(cfg: AllenConfig) -> list[int]:
    """The reference selection: an explicit loop over the session B experiments."""
    ids = []
    for experiment_id, area, cre, depth in SESSIONS:
        if cfg.areas is not None and area not in cfg.areas:
            continue
        if cfg.cre_lines is not None and cre not in cfg.cre_lines:
            continue
        if cfg.imaging_depths is not None and depth not in cfg.imaging_depths:
            continue
        ids.append(experiment_id)
    ids.sort()
    return ids if cfg.max_experiments is None else ids[: cfg.max_experiments]


# ------------------------------------------------------------------ the cache as it is
def test_files_already_in_an_allensdk_cache_are_reused_offline(tmp_path, raw_rows, session_bytes):
    cfg = make_cfg(tmp_path)
    for experiment_id, content in session_bytes.items():
        place_in_cache(cfg, experiment_id, content)
    made, lines = [], []
    out_dir = tmp_path / "raw"
    # Any query or download would hit a closed port and fail.
    manifest = pull_allen(cfg, out_dir, progress=lines.append,
                          cache_factory=listing_factory(raw_rows, closed_port_url(), made))

    assert [e["experiment_id"] for e in manifest["experiments"]] == [501, 502, 503]
    assert manifest["experiments"][0] == {
        "experiment_id": 501, "container_id": 10_501, "area": "VISp", "cre_line": "Cux2-CreERT2",
        "imaging_depth": 175, "session_type": "three_session_B", "file": "501.nwb",
        "source_file": "ophys_experiment_data/501.nwb", "sha256": sha256_of(session_bytes[501]),
        "bytes": len(session_bytes[501]), "events_file": None,
    }
    assert manifest["source"] == "allen" and manifest["cache_dir"] == cfg.cache_dir
    assert json.loads((out_dir / "manifest.json").read_text()) == manifest
    for record in manifest["experiments"]:
        cached = Path(cfg.cache_dir) / record["source_file"]
        assert os.path.samefile(out_dir / record["file"], cached)  # hard link, no second copy
    assert "[1/3] experiment 501 (VISp, Cux2-CreERT2, 175 µm)" in lines
    assert "[3/3] experiment 503 (VISl, Rorb-IRES2-Cre, 275 µm)" in lines
    # The real AllenSDK cache serves the files it holds without the network.
    assert made[0].get_ophys_experiment_data(502).get_metadata()["ophys_experiment_id"] == 502
    assert read_session(out_dir / "503.nwb").metadata.area == "VISl"


@pytest.mark.parametrize("filters", [
    {},
    {"areas": ("VISp",)},
    {"imaging_depths": (275,)},
    {"cre_lines": ("Rorb-IRES2-Cre",)},
    {"areas": ("VISp", "VISl"), "max_experiments": 2},
    {"max_experiments": 1},
])
def test_filters_reach_the_listing_and_max_experiments_keeps_the_lowest_ids(
        tmp_path, raw_rows, session_bytes, filters):
    cfg = make_cfg(tmp_path, **filters)
    for experiment_id, content in session_bytes.items():
        place_in_cache(cfg, experiment_id, content)
    made = []
    manifest = pull_allen(cfg, tmp_path / "raw", progress=lambda line: None,
                          cache_factory=listing_factory(raw_rows, closed_port_url(), made))

    assert [e["experiment_id"] for e in manifest["experiments"]] == selected_ids(cfg)
    assert made[0].listing_calls == [{
        "stimuli": ["natural_scenes"],
        "targeted_structures": list(filters["areas"]) if "areas" in filters else None,
        "cre_lines": list(filters["cre_lines"]) if "cre_lines" in filters else None,
        "imaging_depths": list(filters["imaging_depths"]) if "imaging_depths" in filters else None,
    }]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(
        [f"{i}.nwb" for i in selected_ids(cfg)] + ["manifest.json"])


# ------------------------------------------------------------------ downloads
def test_missing_files_are_downloaded_through_the_allensdk_link(tmp_path, raw_rows, session_bytes, server):
    for experiment_id, content in session_bytes.items():
        server.serve_experiment(experiment_id, content)
    cfg = make_cfg(tmp_path)
    lines = []
    manifest = pull_allen(cfg, tmp_path / "raw", progress=lines.append, backoff_s=0.01,
                          cache_factory=listing_factory(raw_rows, server.base_url))

    for record in manifest["experiments"]:
        content = session_bytes[record["experiment_id"]]
        assert record["sha256"] == sha256_of(content) and record["bytes"] == len(content)
        assert (Path(cfg.cache_dir) / "ophys_experiment_data" / record["file"]).read_bytes() == content
    assert not list(Path(cfg.cache_dir).rglob("*.part"))
    assert any("501.nwb: downloading " + server.url(server.nwb_links[501]) == line for line in lines)

    # A second pull finds every file in the cache and transfers nothing.
    n_requests = len(server.requests)
    again = pull_allen(cfg, tmp_path / "raw", progress=lambda line: None,
                       cache_factory=listing_factory(raw_rows, server.base_url))
    assert again == manifest
    assert len(server.requests) == n_requests


def test_unmodified_allensdk_cache_runs_end_to_end_against_a_local_api(tmp_path, raw_rows, session_bytes, server):
    server.experiments = raw_rows
    for experiment_id, content in session_bytes.items():
        server.serve_experiment(experiment_id, content)
    cfg = make_cfg(tmp_path, areas=("VISp",))

    manifest = pull_allen(cfg, tmp_path / "raw", progress=lambda line: None, backoff_s=0.01,
                          cache_factory=lambda manifest_file: BrainObservatoryCache(
                              manifest_file=str(manifest_file), base_uri=server.base_url))

    # 504 is VISp too, but its session (A) has no natural scenes.
    assert [e["experiment_id"] for e in manifest["experiments"]] == [501, 502]
    assert manifest["api_url"] == server.base_url
    assert (Path(cfg.cache_dir) / "ophys_experiments.json").exists()  # the AllenSDK's own listing cache
    assert [e["sha256"] for e in manifest["experiments"]] == [sha256_of(session_bytes[i]) for i in (501, 502)]


def test_interrupted_download_resumes_within_a_pull(tmp_path, raw_rows, server):
    # Longer than two transfer blocks, so that the cut leaves one block to resume from.
    content = write_tiny_session(tmp_path / "long.nwb", 501, n_repeats=250).read_bytes()
    assert len(content) > 2 * BLOCK
    link = server.serve_experiment(501, content)
    server.drop_after[link] = BLOCK
    cfg = make_cfg(tmp_path, max_experiments=1)
    manifest = pull_allen(cfg, tmp_path / "raw", progress=lambda line: None, backoff_s=0.01,
                          cache_factory=listing_factory(raw_rows, server.base_url))

    assert server.ranges_requested(link) == [None, f"bytes={BLOCK}-"]
    assert manifest["experiments"][0]["sha256"] == sha256_of(content)


def test_unreadable_cached_file_is_downloaded_again(tmp_path, raw_rows, session_bytes, server):
    server.serve_experiment(501, session_bytes[501])
    cfg = make_cfg(tmp_path, max_experiments=1)
    cached = place_in_cache(cfg, 501, session_bytes[501][:2000])
    lines = []
    manifest = pull_allen(cfg, tmp_path / "raw", progress=lines.append, backoff_s=0.01,
                          cache_factory=listing_factory(raw_rows, server.base_url))

    assert any("not a readable HDF5 file" in line and "downloading it again" in line for line in lines)
    assert cached.read_bytes() == session_bytes[501]
    assert manifest["experiments"][0]["sha256"] == sha256_of(session_bytes[501])


def test_downloaded_file_that_is_not_a_session_stops_the_pull(tmp_path, raw_rows, server):
    server.serve_experiment(501, b"an error page, not an NWB file")
    cfg = make_cfg(tmp_path, max_experiments=1)
    with pytest.raises(NwbLayoutError, match=r"ophys_experiment_data/501\.nwb: not a readable HDF5 file"):
        pull_allen(cfg, tmp_path / "raw", progress=lambda line: None, backoff_s=0.01,
                   cache_factory=listing_factory(raw_rows, server.base_url))


def test_file_holding_another_experiment_is_rejected(tmp_path, raw_rows, session_bytes):
    cfg = make_cfg(tmp_path, max_experiments=1)
    place_in_cache(cfg, 501, session_bytes[502])
    with pytest.raises(SourceError, match=r"501\.nwb: holds ophys experiment 502 .* keeps experiment 501"):
        pull_allen(cfg, tmp_path / "raw", progress=lambda line: None,
                   cache_factory=listing_factory(raw_rows, closed_port_url()))


def test_missing_nwb_file_is_a_404_naming_the_url(tmp_path, raw_rows, server):
    server.nwb_links[501] = "/api/v2/well_known_file_download/1"
    cfg = make_cfg(tmp_path, max_experiments=1)
    with pytest.raises(SourceError, match=rf"{server.base_url}/api/v2/well_known_file_download/1: HTTP 404"):
        pull_allen(cfg, tmp_path / "raw", progress=lambda line: None, backoff_s=0.01,
                   cache_factory=listing_factory(raw_rows, server.base_url))
    assert len(server.ranges_requested("/api/v2/well_known_file_download/1")) == 1


def test_experiment_without_an_nwb_file_is_named(tmp_path, raw_rows, server):
    cfg = make_cfg(tmp_path, max_experiments=1)
    with pytest.raises(SourceError, match=r"127\.0\.0\.1:\d+ lists no NWB file for ophys experiment 501"):
        pull_allen(cfg, tmp_path / "raw", progress=lambda line: None,
                   cache_factory=listing_factory(raw_rows, server.base_url))


# ------------------------------------------------------------------ the API unreachable or refusing
def test_offline_pull_fails_within_seconds_naming_the_host_and_nwb_dir(tmp_path):
    url = closed_port_url()
    out_dir = tmp_path / "raw"
    out_dir.mkdir()
    (out_dir / "earlier.nwb").write_bytes(b"kept")
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        pull_allen(make_cfg(tmp_path), out_dir, progress=lambda line: None,
                   cache_factory=lambda manifest_file: BrainObservatoryCache(
                       manifest_file=str(manifest_file), base_uri=url))

    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert message.startswith(f"could not reach {host_of(url)} (")
    assert "Connection refused" in message and "list of ophys experiments" in message
    assert "data.source: nwb_dir" in message and "data.nwb_dir" in message
    assert (out_dir / "earlier.nwb").read_bytes() == b"kept"  # nothing removed before the listing


@pytest.fixture
def no_name_resolution(monkeypatch):
    """Make the AllenSDK's queries fail as they do on a machine without network."""
    requested = []

    def offline(url):
        requested.append(url)
        raise URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr("allensdk.core.json_utilities.read_url_get", offline)
    return requested


def test_offline_default_cache_names_api_brain_map_org(tmp_path, no_name_resolution):
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"could not reach api\.brain-map\.org \(.*Name or service not known\)"
                                          r".*data\.source: nwb_dir"):
        pull_allen(make_cfg(tmp_path), tmp_path / "raw", progress=lambda line: None)

    assert time.monotonic() - started < 5
    assert no_name_resolution[0].startswith("http://api.brain-map.org/api/v2/data/query.json")


def test_run_pull_with_source_allen_reports_the_offline_error(tmp_path, no_name_resolution):
    from deepmouse.pipeline import run_pull

    params = parse_params({"data": {"source": "allen", "allen": {"cache_dir": str(tmp_path / "cache")}}})
    with pytest.raises(SourceError, match=r"could not reach api\.brain-map\.org"):
        run_pull(params, tmp_path / "raw", progress=lambda line: None)


def test_api_server_errors_are_retried(tmp_path, raw_rows, session_bytes, server):
    server.experiments = raw_rows
    server.serve_experiment(501, session_bytes[501])
    server.status_next[QUERY_PATH] = [503, 502]
    lines = []
    manifest = pull_allen(make_cfg(tmp_path, max_experiments=1), tmp_path / "raw", progress=lines.append,
                          backoff_s=0.01, cache_factory=lambda manifest_file: BrainObservatoryCache(
                              manifest_file=str(manifest_file), base_uri=server.base_url))

    assert [e["experiment_id"] for e in manifest["experiments"]] == [501]
    assert sum("retry" in line and "HTTP 50" in line for line in lines) == 2


def test_api_refusal_stops_at_once(tmp_path, server):
    server.status_next[QUERY_PATH] = [403]
    with pytest.raises(SourceError, match=r"127\.0\.0\.1:\d+ answered HTTP 403 .* list of ophys experiments"):
        pull_allen(make_cfg(tmp_path), tmp_path / "raw", progress=lambda line: None, backoff_s=0.01,
                   cache_factory=lambda manifest_file: BrainObservatoryCache(
                       manifest_file=str(manifest_file), base_uri=server.base_url))
    assert len(server.ranges_requested(QUERY_PATH)) == 1


def test_api_errors_exhaust_the_retries(tmp_path, server):
    server.status_next[QUERY_PATH] = [500] * 10
    with pytest.raises(SourceError, match=r"did not answer the request for the list of ophys experiments "
                                          r"after 2 attempts: HTTP 500"):
        pull_allen(make_cfg(tmp_path, retries=1), tmp_path / "raw", progress=lambda line: None,
                   backoff_s=0.01, cache_factory=lambda manifest_file: BrainObservatoryCache(
                       manifest_file=str(manifest_file), base_uri=server.base_url))


# ------------------------------------------------------------------ listings and config
def test_empty_listing_names_the_filters(tmp_path, raw_rows):
    with pytest.raises(SourceError, match=r"lists no ophys experiments with natural_scenes matching data\.allen "
                                          r"filters \(areas=\['VISam'\], imaging_depths=\[175\]\)"):
        pull_allen(make_cfg(tmp_path, areas=("VISam",), imaging_depths=(175,)), tmp_path / "raw",
                   progress=lambda line: None, cache_factory=listing_factory(raw_rows, closed_port_url()))


def test_listing_row_without_a_cre_line_is_named(tmp_path, raw_rows):
    raw_rows[0]["specimen"]["donor"]["transgenic_lines"] = []
    with pytest.raises(SourceError, match=r"listing row for experiment 503 lacks cre_line \(Cre line\)"):
        pull_allen(make_cfg(tmp_path), tmp_path / "raw", progress=lambda line: None,
                   cache_factory=listing_factory(raw_rows, closed_port_url()))


@pytest.mark.parametrize("cache_dir", ["raw", "raw/cache"])
def test_cache_inside_the_output_folder_is_refused(tmp_path, cache_dir):
    cfg = make_cfg(tmp_path, cache_dir=str(tmp_path / cache_dir))
    with pytest.raises(ConfigError, match=r"data\.allen\.cache_dir: .* lies inside the pull output folder"):
        pull_allen(cfg, tmp_path / "raw", progress=lambda line: None,
                   cache_factory=listing_factory([], closed_port_url()))


def test_files_are_copied_where_hard_links_fail(tmp_path, raw_rows, session_bytes, monkeypatch):
    cfg = make_cfg(tmp_path, max_experiments=1)
    place_in_cache(cfg, 501, session_bytes[501])

    def no_links(self, target):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(Path, "hardlink_to", no_links)
    manifest = pull_allen(cfg, tmp_path / "raw", progress=lambda line: None,
                          cache_factory=listing_factory(raw_rows, closed_port_url()))

    copied = tmp_path / "raw" / "501.nwb"
    assert not os.path.samefile(copied, Path(cfg.cache_dir) / "ophys_experiment_data" / "501.nwb")
    assert copied.read_bytes() == session_bytes[501]
    assert manifest["experiments"][0]["sha256"] == sha256_of(session_bytes[501])


def test_listing_that_is_not_a_list_is_reported(tmp_path):
    class FailedQueryCache(ListingCache):
        def get_ophys_experiments(self, **filters):
            return "Query failed: unknown model"  # what the API puts in "msg" when a query fails

    with pytest.raises(SourceError, match=r"answered the experiment listing with str 'Query failed"):
        pull_allen(make_cfg(tmp_path), tmp_path / "raw", progress=lambda line: None,
                   cache_factory=lambda manifest_file: FailedQueryCache(manifest_file, [], closed_port_url()))


# ------------------------------------------------------------------ events (data.allen.events)
def test_events_are_downloaded_through_the_allensdk_link_and_linked_beside_the_nwb(
        tmp_path, raw_rows, session_bytes, events_bytes, server):
    for experiment_id in session_bytes:
        server.serve_experiment(experiment_id, session_bytes[experiment_id])
        server.serve_events(experiment_id, events_bytes[experiment_id])
    cfg = make_cfg(tmp_path, events=True)
    lines, made = [], []
    manifest = pull_allen(cfg, tmp_path / "raw", progress=lines.append, backoff_s=0.01,
                          cache_factory=listing_factory(raw_rows, server.base_url, made))

    out = tmp_path / "raw"
    for record in manifest["experiments"]:
        experiment_id = record["experiment_id"]
        assert record["events_file"] == f"{experiment_id}_events.npz"
        cached = Path(cfg.cache_dir) / "ophys_experiment_events" / record["events_file"]
        assert cached.read_bytes() == events_bytes[experiment_id]
        assert os.path.samefile(out / record["events_file"], cached)
    assert any(line == "501_events.npz: downloading " + server.url(server.events_links[501]) for line in lines)
    # The AllenSDK finds the events where it keeps them, and reads what we read.
    session = read_session(out / "501.nwb")
    np.testing.assert_array_equal(made[0].get_ophys_experiment_events(501),
                                  read_events(out / "501_events.npz", *session.dff.shape))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{i}.nwb" for i in (501, 502, 503)] + [f"{i}_events.npz" for i in (501, 502, 503)] + ["manifest.json"])


def test_cached_events_are_reused_offline(tmp_path, raw_rows, session_bytes, events_bytes):
    cfg = make_cfg(tmp_path, events=True, max_experiments=1)
    place_in_cache(cfg, 501, session_bytes[501])
    cached = place_events_in_cache(cfg, 501, events_bytes[501])
    lines = []
    # Any query or download would hit a closed port and fail.
    manifest = pull_allen(cfg, tmp_path / "raw", progress=lines.append,
                          cache_factory=listing_factory(raw_rows, closed_port_url()))

    assert manifest["experiments"][0]["events_file"] == "501_events.npz"
    assert os.path.samefile(tmp_path / "raw" / "501_events.npz", cached)
    assert "501_events.npz: already in the cache, reused" in lines


def test_events_are_not_fetched_unless_asked(tmp_path, raw_rows, session_bytes, events_bytes, server):
    server.serve_experiment(501, session_bytes[501])
    link = server.serve_events(501, events_bytes[501])
    manifest = pull_allen(make_cfg(tmp_path, max_experiments=1), tmp_path / "raw", progress=lambda line: None,
                          backoff_s=0.01, cache_factory=listing_factory(raw_rows, server.base_url))

    assert manifest["experiments"][0]["events_file"] is None
    assert server.ranges_requested(link) == []
    assert not (tmp_path / "raw" / "501_events.npz").exists()


def test_cached_events_that_do_not_fit_the_session_are_downloaded_again(
        tmp_path, raw_rows, session_bytes, events_bytes, server):
    cfg = make_cfg(tmp_path, events=True, max_experiments=1)
    place_in_cache(cfg, 501, session_bytes[501])
    cached = place_events_in_cache(cfg, 501, misfit_events_bytes(tmp_path))
    server.serve_events(501, events_bytes[501])
    lines = []
    pull_allen(cfg, tmp_path / "raw", progress=lines.append, backoff_s=0.01,
               cache_factory=listing_factory(raw_rows, server.base_url))

    assert cached.read_bytes() == events_bytes[501]
    assert any("events of shape" in line and "do not match" in line and "downloading it again" in line
               for line in lines)


def test_downloaded_events_that_do_not_fit_stop_the_pull(tmp_path, raw_rows, session_bytes, events_bytes, server):
    cfg = make_cfg(tmp_path, events=True, max_experiments=1)
    place_in_cache(cfg, 501, session_bytes[501])
    server.serve_events(501, misfit_events_bytes(tmp_path))
    with pytest.raises(DataError, match=r"501_events\.npz: events of shape \(2, 5\) do not match the session's "
                                        r"dF/F traces \(3, 90\)"):
        pull_allen(cfg, tmp_path / "raw", progress=lambda line: None, backoff_s=0.01,
                   cache_factory=listing_factory(raw_rows, server.base_url))


def test_experiment_without_an_events_file_is_named(tmp_path, raw_rows, session_bytes, server):
    cfg = make_cfg(tmp_path, events=True, max_experiments=1)
    place_in_cache(cfg, 501, session_bytes[501])
    with pytest.raises(SourceError, match=r"127\.0\.0\.1:\d+ lists no events file for ophys experiment 501"):
        pull_allen(cfg, tmp_path / "raw", progress=lambda line: None,
                   cache_factory=listing_factory(raw_rows, server.base_url))


def test_allen_events_key_is_a_validated_boolean():
    assert parse_params({}).data.allen.events is False
    assert parse_params({"data": {"allen": {"events": True}}}).data.allen.events is True
    with pytest.raises(ConfigError, match=r"data\.allen\.events: expected true or false, got 'yes'"):
        parse_params({"data": {"allen": {"events": "yes"}}})
