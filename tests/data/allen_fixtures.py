"""A local stand-in for the Allen servers, and tiny sessions to serve.

:class:`LocalAllenServer` is an ``http.server`` on 127.0.0.1 (port chosen by
the OS) that serves files with Range support and, on request, misbehaves: cuts
the connection after some bytes, sends corrupted bytes, answers a given status,
ignores Range headers. It also answers the three Allen API queries the AllenSDK
makes for a pull (the experiment listing, the eye-tracking file list, an
experiment's NWB file), so a real ``BrainObservatoryCache`` pointed at it runs
its own code end to end without the internet; and an experiment's events
file query, for pulls with ``data.allen.events``.

For the Neuropixels release it answers the ecephys warehouse queries an
``EcephysProjectCache`` makes (the ``EcephysSession``, ``EcephysProbe``,
``EcephysChannel`` and ``EcephysUnit`` tables, paged as the warehouse pages
them, and the ``EcephysNwb`` / ``EcephysLfpNwb`` well-known files), built by
:func:`ecephys_release` from a few sessions; :func:`write_placeholder_session_nwb`
writes the small HDF5 files it serves as session NWB files.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import h5py
import numpy as np

from deepmouse.data.events import events_path, write_events
from deepmouse.data.layouts.ophys import DFF_PATH
from deepmouse.data.nwb_writer import write_session_nwb
from deepmouse.data.session_metadata import SessionMetadata

QUERY_PATH = "/api/v2/data/query.json"
DOWNLOAD_PREFIX = "/api/v2/well_known_file_download/"


class LocalAllenServer:
    """Files and Allen API answers over HTTP on 127.0.0.1; use as a context manager.

    Attributes
    ----------
    files : dict of str to bytes
        URL path -> content.
    requests : list of (str, str or None)
        Every request's path and Range header, in arrival order.
    drop_after : dict of str to int
        URL path -> bytes sent before the connection is cut (next request only).
    corrupt_next : dict of str to int
        URL path -> how many of the next requests get corrupted bytes (same size).
    status_next : dict of str to list of int
        URL path -> statuses to answer instead of the file, one per request.
    range_support : bool
        False: ignore Range headers and always send the whole file (200).
    experiments : list of dict
        Rows the experiment listing query answers with (Allen API format).
    nwb_links : dict of int to str
        Experiment id -> download link its NWB file query answers with.
    events_links : dict of int to str
        Experiment id -> download link its events file query answers with.
    ecephys : dict of str to list of dict
        ``sessions``, ``probes``, ``channels``, ``units``: rows the Neuropixels warehouse
        table queries answer with (see :func:`ecephys_release`).
    session_nwb_links, lfp_links : dict of int to str
        Session id / probe id -> download link of its session NWB / probe LFP file.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.full_requests: list[tuple[str, str | None, str]] = []
        self.drop_after: dict[str, int] = {}
        self.corrupt_next: dict[str, int] = {}
        self.status_next: dict[str, list[int]] = {}
        self.range_support = True
        self.experiments: list[dict] = []
        self.nwb_links: dict[int, str] = {}
        self.events_links: dict[int, str] = {}
        self.ecephys: dict[str, list[dict]] = {"sessions": [], "probes": [], "channels": [], "units": []}
        self.session_nwb_links: dict[int, str] = {}
        self.lfp_links: dict[int, str] = {}
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "LocalAllenServer":
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def ranges_requested(self, path: str) -> list[str | None]:
        """Range headers of the requests for one path (None: whole file asked for)."""
        with self.lock:
            return [rng for p, rng in self.requests if p == path]

    def serve_experiment(self, experiment_id: int, content: bytes) -> str:
        """Serve an NWB file where the Allen API's NWB query for ``experiment_id`` points."""
        link = f"{DOWNLOAD_PREFIX}{900_000 + experiment_id}"
        self.files[link] = content
        self.nwb_links[experiment_id] = link
        return link

    def serve_session_nwb(self, session_id: int, content: bytes) -> str:
        """Serve a Neuropixels session NWB file where its ``EcephysNwb`` query points."""
        link = f"{DOWNLOAD_PREFIX}{1_100_000_000 + session_id}"
        self.files[link] = content
        self.session_nwb_links[session_id] = link
        return link

    def serve_probe_lfp(self, probe_id: int, content: bytes) -> str:
        """Serve a probe's LFP file where its ``EcephysLfpNwb`` query points (a pull must never ask)."""
        link = f"{DOWNLOAD_PREFIX}{1_200_000_000 + probe_id}"
        self.files[link] = content
        self.lfp_links[probe_id] = link
        return link

    def queries(self) -> list[str]:
        """The decoded query strings of every Allen API query, in arrival order."""
        with self.lock:
            return [query for path, _, query in self.full_requests if path == QUERY_PATH]

    def serve_events(self, experiment_id: int, content: bytes) -> str:
        """Serve an events file where the Allen API's events query for ``experiment_id`` points."""
        link = f"{DOWNLOAD_PREFIX}{950_000 + experiment_id}"
        self.files[link] = content
        self.events_links[experiment_id] = link
        return link


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # keep test output clean

    def do_GET(self) -> None:
        owner: LocalAllenServer = self.server.owner
        parsed = urlsplit(self.path)
        path = parsed.path
        with owner.lock:
            owner.requests.append((path, self.headers.get("Range")))
            owner.full_requests.append((path, self.headers.get("Range"), unquote(parsed.query)))
            queued = owner.status_next.get(path)
            status = queued.pop(0) if queued else None
            drop_after = owner.drop_after.pop(path, None)
            corrupt = owner.corrupt_next.get(path, 0) > 0
            if corrupt:
                owner.corrupt_next[path] -= 1
        if status is not None:
            self.send_error(status)
            return
        if path == QUERY_PATH:
            self._answer_query(owner, unquote(parsed.query))
            return
        content = owner.files.get(path)
        if content is None:
            self.send_error(404)
            return
        if corrupt:
            content = bytes(b ^ 0xFF for b in content[:64]) + content[64:]
        start = self._range_start() if owner.range_support else None
        if start is not None and start >= len(content):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(content)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if start is not None:
            body = content[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        else:
            body = content
            self.send_response(200)
            self.send_header("Accept-Ranges", "bytes" if owner.range_support else "none")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if drop_after is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[:drop_after])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _range_start(self) -> int | None:
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        return int(match.group(1)) if match else None

    def _answer_query(self, owner: LocalAllenServer, query: str) -> None:
        ecephys_table = re.search(r"criteria=model::Ecephys(Session|Probe|Channel|Unit)(?![A-Za-z])", query)
        if ecephys_table is not None:
            rows = owner.ecephys[ecephys_table.group(1).lower() + "s"]
            # Paged as the warehouse pages: rows start_row .. start_row + num_rows, by id.
            start = int(m.group(1)) if (m := re.search(r"start_row\$eq(\d+)", query)) else 0
            count = int(m.group(1)) if (m := re.search(r"num_rows\$eq(\d+)", query)) else len(rows)
            page = sorted(rows, key=lambda row: row["id"])[start:start + count]
            self._send_json({"success": True, "id": 0, "start_row": start, "num_rows": len(page),
                             "total_rows": len(rows), "msg": page})
            return
        if "model::OphysExperiment" in query:
            rows = owner.experiments
        elif "EyeDlcScreenMapping" in query:
            rows = []
        elif (links := _well_known_file_links(owner, query)) is not None and (
                match := re.search(r"attachable_id\$eq(\d+)", query)):
            experiment_id = int(match.group(1))
            link = links.get(experiment_id)
            rows = [] if link is None else [{"attachable_id": experiment_id, "download_link": link}]
        else:
            self.send_error(400, f"query not known to the test server: {query}")
            return
        self._send_json({"success": True, "id": 0, "start_row": 0, "num_rows": len(rows),
                         "total_rows": len(rows), "msg": rows})

    def _send_json(self, answer: dict) -> None:
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _well_known_file_links(owner: LocalAllenServer, query: str) -> dict[int, str] | None:
    """The links that answer a well-known-file query, by the file type it names; None if another query."""
    if "NWBOphys" in query:
        return owner.nwb_links
    if "ObservatoryEventsFile" in query:
        return owner.events_links
    if "'EcephysNwb'" in query:
        return owner.session_nwb_links
    if "'EcephysLfpNwb'" in query:
        return owner.lfp_links
    return None


def refuse_non_local_addresses(monkeypatch) -> None:
    """Make every name lookup but the loopback's fail, so that no test can reach the internet."""
    real_getaddrinfo = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            raise socket.gaierror(socket.EAI_NONAME, f"tests resolve only 127.0.0.1, not {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)


def closed_port_url() -> str:
    """``http://127.0.0.1:<port>`` where nothing listens (the OS just freed the port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def raw_experiment(experiment_id: int, area: str, cre_line: str, imaging_depth: int,
                   session_type: str = "three_session_B") -> dict:
    """One row of the Allen API's ophys experiment listing, with the fields the AllenSDK reads."""
    return {
        "id": experiment_id,
        "imaging_depth": imaging_depth,
        "targeted_structure": {"acronym": area},
        "experiment_container_id": experiment_id + 10_000,
        "experiment_container": {"id": experiment_id + 10_000, "failed": False},
        "stimulus_name": session_type,
        "date_of_acquisition": "2016-03-01T09:30:00Z",
        "specimen": {
            "name": f"{cre_line};Ai93-{experiment_id}",
            "donor": {
                "external_donor_name": str(experiment_id),
                "date_of_birth": "2015-11-18T00:00:00Z",
                "transgenic_lines": [
                    {"name": cre_line, "transgenic_line_type_name": "driver"},
                    {"name": "Ai93(TITL-GCaMP6f)", "transgenic_line_type_name": "reporter"},
                ],
            },
        },
    }


def write_tiny_session(path: Path, experiment_id: int, area: str = "VISp", cre_line: str = "Cux2-CreERT2",
                       imaging_depth: int = 175, seed: int = 0, n_repeats: int = 2) -> Path:
    """A small but complete session file: 3 cells, 4 images of 6x8 px plus the blank, 8 frames each.

    About 10 kB with the default 2 repeats; each further repeat adds about 1 kB.
    """
    rng = np.random.default_rng(seed)
    n_images = 4
    conditions = rng.permutation(np.repeat(np.arange(n_images + 1), n_repeats))
    boundaries = 5 + 8 * np.arange(conditions.size + 1)
    n_frames = int(boundaries[-1]) + 5
    metadata = SessionMetadata(
        experiment_id=experiment_id, container_id=experiment_id + 10_000, area=area, cre_line=cre_line,
        imaging_depth=imaging_depth, session_type="three_session_B",
        genotype=f"{cre_line}/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt",
        # Every field the AllenSDK looks for, so that reading the file logs no warnings.
        specimen_name=f"{cre_line};Ai93-{experiment_id}", sex="female", age_days=104,
        session_start_time="2016-03-01T09:30:00", indicator="GCaMP6f", excitation_lambda="910 nanometers",
        fov="400x400 microns (512 x 512 pixels)", device="test microscope", device_name="TEST2P.1",
    )
    return write_session_nwb(
        path, metadata=metadata, cell_specimen_ids=np.arange(3) + 100 * experiment_id,
        dff=rng.normal(0.0, 0.2, (3, n_frames)).astype(np.float32), timestamps=np.arange(n_frames) / 30.0,
        scene_index=np.where(conditions == n_images, -1, conditions), frame_start=boundaries[:-1],
        frame_end=boundaries[1:], templates=rng.integers(0, 256, (n_images, 6, 8), dtype=np.uint8),
        running_speed=np.abs(rng.normal(0.0, 5.0, n_frames)).astype(np.float32),
    )


def write_tiny_events(nwb_path: Path, seed: int = 0, dest: Path | None = None) -> Path:
    """Sparse non-negative events fitting a session file's dF/F shape, in Allen's ``.npz`` format.

    Written to ``dest``, by default ``<experiment_id>_events.npz`` beside ``nwb_path``.
    """
    with h5py.File(nwb_path, "r") as f:
        n_cells, n_frames = f[DFF_PATH].shape
    rng = np.random.default_rng(seed)
    events = np.where(rng.random((n_cells, n_frames)) < 0.1, rng.exponential(0.2, (n_cells, n_frames)), 0.0)
    return write_events(dest if dest is not None else events_path(nwb_path), events)


def ecephys_release(sessions: list[tuple[int, int, str, tuple[str, ...]]]) -> dict[str, list[dict]]:
    """The four Neuropixels warehouse tables, in the warehouse's row format, for a few sessions.

    Parameters
    ----------
    sessions : list of (session_id, specimen_id, session_type, areas)
        Each session gets one probe per area (id ``10 * session_id + k``), two channels per
        probe in that area and one outside the brain (no structure), and one unit per channel
        that passes the AllenSDK's default unit filters.

    Returns
    -------
    dict
        ``sessions``, ``probes``, ``channels``, ``units``: lists of rows, as
        :attr:`LocalAllenServer.ecephys` takes them.
    """
    tables = {"sessions": [], "probes": [], "channels": [], "units": []}
    for session_id, specimen_id, session_type, areas in sessions:
        tables["sessions"].append({
            "id": session_id, "specimen_id": specimen_id, "stimulus_name": session_type,
            "date_of_acquisition": "2019-01-09T00:26:20Z", "published_at": "2019-10-03T00:00:00Z",
            "isi_experiment_id": 700_000 + session_id, "fail_eye_tracking": False,
            "specimen": {"donor": {"age": {"days": 112}, "sex": "M",
                                   "full_genotype": "Sst-IRES-Cre/wt;Ai32(RCL-ChR2(H134R)_EYFP)/wt"}},
            "well_known_files": [{"well_known_file_type": {"name": "EcephysNwb"}}],
        })
        for k, area in enumerate(areas):
            probe_id = 10 * session_id + k
            tables["probes"].append({
                "id": probe_id, "ecephys_session_id": session_id, "name": f"probe{'ABCDEF'[k]}",
                "sampling_rate": 29999.95, "lfp_sampling_rate": 2499.99, "phase": "3a", "use_lfp_data": True,
                "air_channel_index": 384, "surface_channel_index": 360, "lfp_temporal_subsampling_factor": 2.0,
            })
            for c, structure in enumerate((area, area, None)):
                channel_id = 100 * probe_id + c
                tables["channels"].append({
                    "id": channel_id, "ecephys_probe_id": probe_id, "local_index": c,
                    "probe_horizontal_position": 43, "probe_vertical_position": 20 * (c + 1),
                    "anterior_posterior_ccf_coordinate": 8000 + c, "dorsal_ventral_ccf_coordinate": 1500 + c,
                    "left_right_ccf_coordinate": 7000 + c,
                    "ecephys_structure_id": None if structure is None else 385 + k,
                    "ecephys_structure_acronym": structure,
                })
                tables["units"].append({
                    "id": 10 * channel_id, "ecephys_channel_id": channel_id, "quality": "good",
                    "amplitude_cutoff": 0.01, "presence_ratio": 0.99, "isi_violations": 0.05,
                    "firing_rate": 5.0 + c, "snr": 3.0,
                })
    return tables


def write_placeholder_session_nwb(path: Path, session_id: int, n_payload_bytes: int = 4096, seed: int = 0) -> Path:
    """A small HDF5 file standing in for a Neuropixels session NWB file, for pull tests.

    Holds the NWB 2 root attributes and ``identifier`` (the session id, as the AllenSDK
    writes it) and ``n_payload_bytes`` of seeded random bytes, so that files of different
    sessions differ. Not a session a reader can use: a pull only moves and checks bytes.
    """
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.attrs["namespace"] = "core"
        f.attrs["neurodata_type"] = "NWBFile"
        f.attrs["nwb_version"] = "2.2.2"
        f["identifier"] = str(session_id)
        f["payload"] = rng.integers(0, 256, n_payload_bytes, dtype=np.uint8)
    return path
