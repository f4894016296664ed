"""The real pull (``data.source: allen``): Brain Observatory sessions with natural scenes.

The AllenSDK's ``BrainObservatoryCache`` does what it does well: list the ophys
experiments (and filter them by area, Cre line and depth), say where in its
cache folder each experiment's NWB file belongs
(``<cache_dir>/ophys_experiment_data/<id>.nwb``), look up the file's download
address (the ``ophys_experiment_data`` well-known-file query), and open the
file. The transfer itself goes through :func:`deepmouse.data.download.download_file`
instead of the AllenSDK's, because that one neither resumes nor verifies, and
leaves nothing behind on failure only by deleting what it had.

With ``data.allen.events: true`` each experiment's L0 event traces come the
same way: the AllenSDK's cache path
(``<cache_dir>/ophys_experiment_events/<id>_events.npz``) and its
``ophys_events_file`` query, transferred by ``download_file``.

So a folder that already holds an AllenSDK cache works as it is: files found
where the AllenSDK expects them are reused without any transfer. Listing the
experiments always needs the Allen API (the AllenSDK queries it even when its
own listing file is cached); without a connection the pull stops within
seconds with a :class:`~deepmouse.errors.SourceError` that names the host and
says how to use ``data.source: nwb_dir`` instead.

The retried queries and the cache-folder helpers both Allen pulls use are in
:mod:`deepmouse.data.allen_api`; the Neuropixels pull is :mod:`deepmouse.data.neuropixels`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from deepmouse.atomic import write_text
from deepmouse.config import AllenConfig
from deepmouse.data.allen_api import as_list, is_within, query_with_retries, relative_to_cache
from deepmouse.data.download import download_file, host_of, sha256_file
from deepmouse.data.events import ALLENSDK_EVENTS_FOLDER, EVENTS_SUFFIX, events_shape, place_events_file
from deepmouse.data.layouts.ophys import DFF_PATH, EXPERIMENT_ID_PATH, check_session_layout
from deepmouse.data.nwb import staged_directory
from deepmouse.errors import ConfigError, DataError, NwbLayoutError, SourceError

Progress = Callable[[str], None]

MANIFEST = "manifest.json"
"""Name of the manifest every source writes next to its NWB files."""

CACHE_MANIFEST = "manifest.json"
"""Name of the AllenSDK's own manifest inside ``data.allen.cache_dir``."""

CACHE_NWB_FOLDER = "ophys_experiment_data"
"""Folder of an AllenSDK cache that holds the sessions' NWB files (``<id>.nwb``)."""

NATURAL_SCENES = "natural_scenes"
"""The AllenSDK name of the stimulus; only session B experiments show it."""

# The AllenSDK's queries for an experiment's NWB and events files (WellKnownFile rows with a download_link).
NWB_FILE_QUERY = ("brain_observatory_queries", "ophys_experiment_data")
EVENTS_FILE_QUERY = ("brain_observatory_queries", "ophys_events_file")

# Fields of an AllenSDK experiment listing row the manifest needs, with what they hold.
_LISTING_FIELDS = {
    "id": "ophys experiment id",
    "experiment_container_id": "experiment container id",
    "targeted_structure": "targeted area",
    "cre_line": "Cre line",
    "imaging_depth": "imaging depth",
}


def open_brain_observatory_cache(manifest_file: str | Path):
    """The AllenSDK cache whose manifest (and downloads) live at ``manifest_file``'s folder.

    Constructing it needs no network; the folder is created if absent.
    """
    # Imported here: allensdk takes seconds to import and only this source needs the cache.
    from allensdk.core.brain_observatory_cache import BrainObservatoryCache

    return BrainObservatoryCache(manifest_file=str(manifest_file))


def cached_files(cfg: AllenConfig) -> list[Path]:
    """The finished files that the AllenSDK cache in ``cfg.cache_dir`` holds now.

    Found by their place in the cache (``ophys_experiment_data/<id>.nwb``
    and, with ``cfg.events``, ``ophys_experiment_events/<id>_events.npz``),
    without the network and without importing allensdk, so that the
    ``fingerprint`` stage can list them on every run in milliseconds.
    Transfers in progress (``.part`` files) are not listed.

    Returns
    -------
    list of Path
        Sorted; empty when the cache folder does not exist yet.
    """
    cache_dir = Path(cfg.cache_dir)
    files = list((cache_dir / CACHE_NWB_FOLDER).glob("*.nwb"))
    if cfg.events:
        files += (cache_dir / ALLENSDK_EVENTS_FOLDER).glob(f"*{EVENTS_SUFFIX}")
    return sorted(path for path in files if path.is_file())


def pull_allen(
    cfg: AllenConfig,
    out_dir: str | Path,
    *,
    progress: Progress = print,
    cache_factory: Callable[[Path], Any] | None = None,
    backoff_s: float = 1.0,
) -> dict:
    """Fetch the natural scenes sessions that ``cfg`` selects and describe them in a manifest.

    Each selected experiment's NWB file is taken from the AllenSDK cache in
    ``cfg.cache_dir`` when it is already there and readable, downloaded into
    that cache otherwise, checked to hold the experiment the listing names,
    and hard-linked (copied across filesystems) to
    ``<out_dir>/<experiment_id>.nwb``. With ``cfg.events``, its events file
    is taken or downloaded the same way, checked to match the session's dF/F
    traces in shape, and linked to ``<out_dir>/<experiment_id>_events.npz``.
    Once the listing has succeeded, everything is written into a staging
    folder beside ``out_dir``, manifest last, and renamed onto ``out_dir``
    only when complete (:func:`~deepmouse.data.nwb.staged_directory`): a pull
    that fails leaves ``out_dir`` as it was and no staging folder behind.

    Parameters
    ----------
    cfg : AllenConfig
        ``data.allen`` params: cache folder, filters (None = all),
        ``max_experiments`` (the lowest ids are kept), retries, timeout and
        whether to fetch events.
    out_dir : str or Path
        Output folder of the pull stage; must not contain ``cfg.cache_dir``.
    progress : callable
        Receives one line per experiment, ``[i/n] experiment <id> (<area>,
        <cre line>, <depth> µm)``, and the download progress.
    cache_factory : callable, optional
        ``cache_factory(manifest_file)`` returns the cache object; the default
        opens an AllenSDK ``BrainObservatoryCache``. A replacement must offer
        what is used of it: ``get_ophys_experiments(stimuli=,
        targeted_structures=, cre_lines=, imaging_depths=)``,
        ``get_cache_path(None, EXPERIMENT_DATA_KEY, id)`` (and
        ``EVENTS_DATA_KEY`` with ``cfg.events``),
        ``get_ophys_experiment_data(id).get_metadata()``, and ``api`` with
        ``api_url`` and ``template_query``.
    backoff_s : float
        Wait before the first retry of a failed query or transfer; doubles
        with every further retry.

    Returns
    -------
    dict
        The manifest, also written to ``<out_dir>/manifest.json``:
        ``{"source": "allen", "api_url", "cache_dir", "filters", "experiments":
        [{experiment_id, container_id, area, cre_line, imaging_depth,
        session_type, file, source_file, sha256, bytes, events_file}]}``,
        experiments in ascending id order, ``source_file`` relative to
        ``cache_dir``, ``events_file`` null unless ``cfg.events``.

    Raises
    ------
    ConfigError
        If ``cfg.cache_dir`` lies inside ``out_dir`` (replacing ``out_dir``
        would delete the cache).
    SourceError
        If the Allen API cannot be reached or refuses a query, the listing is
        empty or malformed, a download fails, or a file holds another
        experiment than the listing says.
    NwbLayoutError
        If a downloaded file is not a readable session with natural scenes,
        or a downloaded events file is not a readable ``.npz`` with ``ev``.
    DataError
        If a downloaded events file does not match its session's shape.
    """
    out_dir = Path(out_dir)
    cache_dir = Path(cfg.cache_dir)
    if is_within(cache_dir, out_dir):
        raise ConfigError(
            f"data.allen.cache_dir: {cache_dir} lies inside the pull output folder {out_dir}, "
            "which every pull replaces; choose a cache folder outside it"
        )
    cache = (cache_factory or open_brain_observatory_cache)(cache_dir / CACHE_MANIFEST)
    host = host_of(cache.api.api_url)
    experiments = list_natural_scenes_experiments(cache, cfg, backoff_s=backoff_s, progress=progress)
    progress(f"{len(experiments)} experiments with natural scenes selected from {host}")

    with staged_directory(out_dir) as staging:
        records = []
        for i, row in enumerate(experiments, start=1):
            experiment_id = int(row["id"])
            progress(f"[{i}/{len(experiments)}] experiment {experiment_id} "
                     f"({row['targeted_structure']}, {row['cre_line']}, {row['imaging_depth']} µm)")
            path, sha256 = fetch_experiment_nwb(cache, experiment_id, cfg, backoff_s=backoff_s, progress=progress)
            _check_file_holds_experiment(cache, experiment_id, path)
            target = staging / f"{experiment_id}.nwb"
            try:
                target.hardlink_to(path)
            except OSError:  # another filesystem, or links not allowed: a copy is the only way
                shutil.copy2(path, target)
            events_file = None
            if cfg.events:
                events = fetch_experiment_events(cache, experiment_id, cfg, check_session_layout(path)[DFF_PATH],
                                                 backoff_s=backoff_s, progress=progress)
                events_file = place_events_file(events, staging, experiment_id)
            records.append({
                "experiment_id": experiment_id,
                "container_id": int(row["experiment_container_id"]),
                "area": str(row["targeted_structure"]),
                "cre_line": str(row["cre_line"]),
                "imaging_depth": int(row["imaging_depth"]),
                "session_type": row.get("session_type"),
                "file": target.name,
                "source_file": relative_to_cache(path, cache_dir),
                "sha256": sha256 or sha256_file(target),
                "bytes": target.stat().st_size,
                "events_file": events_file,
            })
        manifest = {
            "source": "allen",
            "api_url": cache.api.api_url,
            "cache_dir": str(cfg.cache_dir),
            "filters": {
                "areas": as_list(cfg.areas),
                "cre_lines": as_list(cfg.cre_lines),
                "imaging_depths": as_list(cfg.imaging_depths),
                "max_experiments": cfg.max_experiments,
            },
            "experiments": records,
        }
        write_text(staging / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def brain_observatory_scenes(cfg: AllenConfig, *, progress: Progress = print,
                             cache_factory: Callable[[Path], Any] | None = None,
                             backoff_s: float = 1.0) -> tuple[np.ndarray, Path]:
    """The Brain Observatory's 118 natural scenes, from a session in the AllenSDK cache of ``cfg``.

    For recordings given as tables without images of their own (``data.table.images:
    null``). The first NWB file of ``<cache_dir>/ophys_experiment_data/`` (lowest name)
    that holds the natural scenes templates serves, without the network; if none does,
    the natural scenes experiment of lowest id is fetched into the cache as the ``allen``
    pull fetches it (:func:`fetch_experiment_nwb`; one session-B file, hundreds of MB).
    Every session shows the same templates.

    Returns
    -------
    scenes : ndarray of uint8, shape (118, height, width)
    path : Path
        The NWB file they were read from.

    Raises
    ------
    SourceError
        If the cache holds none and the Allen API cannot be reached or the download fails.
    NwbLayoutError
        If the fetched file is not a readable session with the 118 scenes.
    """
    from deepmouse.data.nwb import read_stimulus_templates
    from deepmouse.data.stimuli import N_IMAGES

    for path in cached_files(dataclasses.replace(cfg, events=False)):
        try:
            scenes = read_stimulus_templates(path)
        except NwbLayoutError as err:
            progress(f"{err}; trying the next file of the cache")
            continue
        if scenes.shape[0] == N_IMAGES:
            progress(f"natural scenes: {N_IMAGES} Brain Observatory templates from {path}")
            return scenes, path
        progress(f"{path}: {scenes.shape[0]} natural scenes templates, not {N_IMAGES}; trying the next file")
    cache = (cache_factory or open_brain_observatory_cache)(Path(cfg.cache_dir) / CACHE_MANIFEST)
    everything = dataclasses.replace(cfg, areas=None, cre_lines=None, imaging_depths=None, max_experiments=1)
    first = list_natural_scenes_experiments(cache, everything, backoff_s=backoff_s, progress=progress)[0]
    path, _ = fetch_experiment_nwb(cache, int(first["id"]), cfg, backoff_s=backoff_s, progress=progress)
    scenes = read_stimulus_templates(path)
    if scenes.shape[0] != N_IMAGES:
        raise NwbLayoutError(f"{path}: {scenes.shape[0]} natural scenes templates, not {N_IMAGES}")
    progress(f"natural scenes: {N_IMAGES} Brain Observatory templates from {path}")
    return scenes, path


def list_natural_scenes_experiments(cache, cfg: AllenConfig, *, backoff_s: float = 1.0,
                                    progress: Progress = print) -> list[Mapping[str, Any]]:
    """The ophys experiments with natural scenes that ``cfg`` selects, in ascending id order.

    Parameters
    ----------
    cache : BrainObservatoryCache or a stand-in (see :func:`pull_allen`)
    cfg : AllenConfig
        Filters (None = all) and ``max_experiments`` (the lowest ids are kept).

    Returns
    -------
    list of dict
        AllenSDK listing rows (``id``, ``experiment_container_id``,
        ``targeted_structure``, ``cre_line``, ``imaging_depth``, ...).

    Raises
    ------
    SourceError
        If the API cannot be reached, nothing matches, or a row lacks a field.
    """
    filters = {
        "targeted_structures": as_list(cfg.areas),
        "cre_lines": as_list(cfg.cre_lines),
        "imaging_depths": as_list(cfg.imaging_depths),
    }
    rows = _query_allen(
        cache, "the list of ophys experiments",
        lambda: cache.get_ophys_experiments(stimuli=[NATURAL_SCENES], **filters),
        cfg, backoff_s, progress,
    )
    if not isinstance(rows, list):
        raise SourceError(f"{host_of(cache.api.api_url)} answered the experiment listing with "
                          f"{type(rows).__name__} {str(rows)[:200]!r}, not a list of experiments")
    if not rows:
        described = ", ".join(f"{key}={value}" for key, value in (
            ("areas", filters["targeted_structures"]), ("cre_lines", filters["cre_lines"]),
            ("imaging_depths", filters["imaging_depths"])) if value is not None)
        raise SourceError(
            f"{host_of(cache.api.api_url)} lists no ophys experiments with {NATURAL_SCENES} matching "
            f"data.allen filters ({described or 'none'})"
        )
    for row in rows:
        missing = [f"{field} ({what})" for field, what in _LISTING_FIELDS.items() if row.get(field) is None]
        if missing:
            raise SourceError(
                f"{host_of(cache.api.api_url)}: the experiment listing row for experiment "
                f"{row.get('id', '<no id>')} lacks {', '.join(missing)}"
            )
    rows = sorted(rows, key=lambda row: int(row["id"]))
    return rows[: cfg.max_experiments] if cfg.max_experiments is not None else rows


def nwb_download_url(cache, experiment_id: int, cfg: AllenConfig, *, backoff_s: float = 1.0,
                     progress: Progress = print) -> str:
    """Download address of one experiment's NWB file, found by the AllenSDK's own query.

    Raises
    ------
    SourceError
        If the API cannot be reached, or lists no NWB file for the experiment.
    """
    return _well_known_file_url(cache, experiment_id, NWB_FILE_QUERY, "NWB file", cfg, backoff_s, progress)


def events_download_url(cache, experiment_id: int, cfg: AllenConfig, *, backoff_s: float = 1.0,
                        progress: Progress = print) -> str:
    """Download address of one experiment's events file, found by the AllenSDK's own query.

    Raises
    ------
    SourceError
        If the API cannot be reached, or lists no events file for the experiment.
    """
    return _well_known_file_url(cache, experiment_id, EVENTS_FILE_QUERY, "events file", cfg, backoff_s, progress)


def _well_known_file_url(cache, experiment_id: int, query: tuple[str, str], what: str, cfg: AllenConfig,
                         backoff_s: float, progress: Progress) -> str:
    rows = _query_allen(
        cache, f"the {what} of ophys experiment {experiment_id}",
        lambda: cache.api.template_query(*query, ophys_experiment_id=experiment_id),
        cfg, backoff_s, progress,
    )
    link = rows[0].get("download_link") if isinstance(rows, list) and rows and isinstance(rows[0], dict) else None
    if not link:
        raise SourceError(f"{host_of(cache.api.api_url)} lists no {what} for ophys experiment {experiment_id}")
    # As the AllenSDK does: links are paths on the API host.
    return cache.api.api_url + link


def fetch_experiment_nwb(cache, experiment_id: int, cfg: AllenConfig, *, backoff_s: float = 1.0,
                         progress: Progress = print) -> tuple[Path, str | None]:
    """Make sure the AllenSDK cache holds a readable NWB file for one experiment.

    A file already where the AllenSDK keeps it is reused if it reads as a
    session (a layout check, no transfer); an unreadable one is downloaded
    again, and replaced only once the new copy is complete.

    Returns
    -------
    path : Path
        The file in the cache.
    sha256 : str or None
        Its digest when it was downloaded now (None when reused).

    Raises
    ------
    SourceError
        If the download fails.
    NwbLayoutError
        If the freshly downloaded file is not a readable session.
    """
    path = Path(cache.get_cache_path(None, cache.EXPERIMENT_DATA_KEY, experiment_id))
    if path.exists():
        try:
            check_session_layout(path)
        except NwbLayoutError as err:
            progress(f"{err}; downloading it again")
        else:
            progress(f"{path.name}: already in the cache, reused")
            return path, None
    url = nwb_download_url(cache, experiment_id, cfg, backoff_s=backoff_s, progress=progress)
    progress(f"{path.name}: downloading {url}")
    result = download_file(url, path, retries=cfg.retries, timeout_s=cfg.timeout_s, backoff_s=backoff_s,
                           progress=progress)
    check_session_layout(path)
    return path, result.sha256


def fetch_experiment_events(cache, experiment_id: int, cfg: AllenConfig, dff_shape: tuple[int, ...], *,
                            backoff_s: float = 1.0, progress: Progress = print) -> Path:
    """Make sure the AllenSDK cache holds an events file that fits one experiment's session.

    A file already where the AllenSDK keeps it
    (``ophys_experiment_events/<id>_events.npz``) is reused if its ``ev``
    array has the session's shape (read from its header, no transfer);
    otherwise it is downloaded again, and replaced only once the new copy is
    complete.

    Parameters
    ----------
    dff_shape : (n_cells, n_frames)
        Shape of the session's dF/F traces, which the events must have.

    Returns
    -------
    Path
        The file in the cache.

    Raises
    ------
    SourceError
        If the API lists no events file for the experiment, or the download fails.
    NwbLayoutError
        If the downloaded file is not a readable ``.npz`` with an ``ev`` array.
    DataError
        If the downloaded events do not have the session's shape.
    """
    path = Path(cache.get_cache_path(None, cache.EVENTS_DATA_KEY, experiment_id))
    dff_shape = tuple(dff_shape)
    if path.exists():
        try:
            _check_events_fit(path, dff_shape)
        except (NwbLayoutError, DataError) as err:
            progress(f"{err}; downloading it again")
        else:
            progress(f"{path.name}: already in the cache, reused")
            return path
    url = events_download_url(cache, experiment_id, cfg, backoff_s=backoff_s, progress=progress)
    progress(f"{path.name}: downloading {url}")
    download_file(url, path, retries=cfg.retries, timeout_s=cfg.timeout_s, backoff_s=backoff_s, progress=progress)
    _check_events_fit(path, dff_shape)
    return path


def _check_events_fit(path: Path, dff_shape: tuple[int, ...]) -> None:
    shape = events_shape(path)
    if shape != dff_shape:
        raise DataError(f"{path}: events of shape {shape} do not match the session's dF/F traces "
                        f"{dff_shape} (cells, frames)")


def _check_file_holds_experiment(cache, experiment_id: int, path: Path) -> None:
    # Opened through the cache, as any AllenSDK user would: it serves the file it holds.
    try:
        metadata = cache.get_ophys_experiment_data(experiment_id).get_metadata()
    except (OSError, KeyError, ValueError) as err:
        raise NwbLayoutError(f"{path}: the AllenSDK could not read the session metadata: {err}") from err
    found = metadata.get("ophys_experiment_id")
    if found != experiment_id:
        raise SourceError(
            f"{path}: holds ophys experiment {found} ({EXPERIMENT_ID_PATH}), but the cache keeps experiment "
            f"{experiment_id} there; delete the file and pull again"
        )


def _query_allen(cache, what: str, query: Callable[[], Any], cfg: AllenConfig, backoff_s: float,
                 progress: Progress):
    """Run one AllenSDK metadata query through :func:`~deepmouse.data.allen_api.query_with_retries`."""
    return query_with_retries(host_of(cache.api.api_url), what, query, retries=cfg.retries,
                              timeout_s=cfg.timeout_s, backoff_s=backoff_s, progress=progress)
