"""The AllenSDK's Neuropixels (ecephys) warehouse cache, with a timeout on every query.

What ``EcephysProjectCache.from_warehouse(scheme=, host=, manifest=, fetch_tries=)``
(allensdk 2.16.2) builds is an ``EcephysProjectCache`` around an
``EcephysProjectWarehouseApi`` around a synchronous ``RmaEngine``. Its metadata
queries (``RmaEngine.get_rma``) call ``requests.get(url)`` without a timeout, so a
silent network would hang them forever, and they read a 5xx page as JSON.
:func:`open_ecephys_cache` builds the same three objects through their public
constructors, with :class:`TimedRmaEngine` in place of ``RmaEngine``: the same
paged query (``rma::options[start_row$eq..][num_rows$eq..][order$eq'id']``),
with a per-request timeout and the HTTP status checked. Everything else (the
queries, the CSV tables it caches in its folder, the paths of the session files)
is the AllenSDK's.

The session table (``get_session_table``) comes from four warehouse queries,
each cached by the AllenSDK as a CSV beside its manifest: ``model::EcephysSession``
(``sessions.csv``), ``model::EcephysProbe`` (``probes.csv``),
``model::EcephysChannel`` with each channel's structure (``channels.csv``) and
``model::EcephysUnit`` (``units.csv``); the table's ``ecephys_structure_acronyms``
are the structures of a session's channels. None of these touches an LFP file.

A session's NWB file is found by the AllenSDK's own query
(``EcephysProjectWarehouseApi.get_session_data``: the ``WellKnownFile`` of type
``EcephysNwb`` attached to the ``EcephysSession``), run with :class:`_LinkOnly`,
which hands back the download address instead of streaming the file, so that the
transfer goes through :func:`deepmouse.data.download.download_file` (resumed,
retried, verified) rather than the AllenSDK's one-shot stream. The LFP files
(``EcephysLfpNwb``, one per probe) are never asked for.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
from allensdk.brain_observatory.ecephys.ecephys_project_api import EcephysProjectWarehouseApi
from allensdk.brain_observatory.ecephys.ecephys_project_api.http_engine import write_from_stream
from allensdk.brain_observatory.ecephys.ecephys_project_api.rma_engine import RmaEngine
from allensdk.brain_observatory.ecephys.ecephys_project_cache import EcephysProjectCache

from deepmouse.errors import SourceError

WAREHOUSE_URL = "http://api.brain-map.org"
"""Where the AllenSDK's warehouse API lives (``EcephysProjectWarehouseApi.default``)."""


class TimedRmaEngine(RmaEngine):
    """``RmaEngine`` whose paged queries time out and check the HTTP status.

    Parameters
    ----------
    scheme, host : str
        As for ``RmaEngine`` (``host`` may carry a port).
    request_timeout_s : float
        Seconds to wait for the connection and then for each read of an answer.
    """

    def __init__(self, scheme: str, host: str, request_timeout_s: float, **kwargs):
        super().__init__(scheme, host, **kwargs)
        self.request_timeout_s = request_timeout_s

    def get_rma(self, query: str):
        # RmaEngine.get_rma, with a timeout and raise_for_status added.
        url = f"{self.scheme}://{self.host}/{self.rma_prefix}/{self.format_query_string}?{query}"
        start_row, total_rows = 0, None
        start_time = time.time()
        while total_rows is None or start_row < total_rows:
            response = requests.get(self.add_page_params(url, start_row), timeout=self.request_timeout_s)
            response.raise_for_status()
            answer = response.json()
            if not answer.get("success"):
                raise SourceError(f"{self.host} refused the query {query[:200]!r}: {str(answer.get('msg'))[:200]}")
            if answer["num_rows"] <= 0 and start_row < answer["total_rows"]:
                # An empty page before the end would loop forever.
                raise SourceError(f"{self.host} answered an empty page at row {start_row} of "
                                  f"{answer['total_rows']} for {query[:200]!r}")
            start_row += answer["num_rows"]
            if total_rows is None:
                total_rows = answer["total_rows"]
            logging.debug(f"downloaded {start_row} of {total_rows} records ({time.time() - start_time:.3f} seconds)")
            yield answer["msg"]


class _LinkOnly:
    """Runs the AllenSDK's metadata queries with ``engine``, but answers a stream with its route."""

    def __init__(self, engine: RmaEngine):
        self.engine = engine

    def get_rma_tabular(self, query: str):
        return self.engine.get_rma_tabular(query)

    def stream(self, route: str) -> str:
        return route


def open_ecephys_cache(manifest_file: str | Path, api_url: str = WAREHOUSE_URL, *,
                       timeout_s: float = 60.0) -> EcephysProjectCache:
    """The AllenSDK's Neuropixels cache at ``manifest_file``'s folder, asking ``api_url``.

    Constructing it needs no network. ``fetch_tries=1``: the caller retries (with backoff
    and messages) rather than the AllenSDK (at once, with warnings).
    """
    parts = urlsplit(api_url)
    if not parts.scheme or not parts.netloc:
        raise SourceError(f"{api_url!r}: not an http(s) address of the Allen API")
    engine = TimedRmaEngine(parts.scheme, parts.netloc, request_timeout_s=timeout_s)
    return EcephysProjectCache(fetch_api=EcephysProjectWarehouseApi(engine), stream_writer=write_from_stream,
                               manifest=str(manifest_file), fetch_tries=1)


def session_nwb_path(cache: EcephysProjectCache, session_id: int) -> Path:
    """Where the AllenSDK keeps a session's NWB file: ``<cache>/session_<id>/session_<id>.nwb``."""
    return Path(cache.get_cache_path(None, cache.SESSION_NWB_KEY, session_id, session_id))


def session_nwb_url(cache: EcephysProjectCache, session_id: int) -> str:
    """Download address of a session's NWB file, by the AllenSDK's own well-known-file query.

    Raises
    ------
    SourceError
        If the warehouse lists no session NWB file, or more than one, for the session.
    """
    engine = cache.fetch_api.rma_engine
    try:
        link = EcephysProjectWarehouseApi(_LinkOnly(engine)).get_session_data(session_id)
    except ValueError as err:  # the AllenSDK's "expected exactly 1 nwb file" (or an empty answer's KeyError)
        raise SourceError(f"{engine.host} does not list exactly one session NWB file (EcephysNwb) for "
                          f"session {session_id}") from err
    except KeyError as err:
        raise SourceError(f"{engine.host} lists a session NWB file for session {session_id} without "
                          f"{err}") from err
    # The warehouse's links are paths on its host ("/api/v2/well_known_file_download/<id>").
    return f"{engine.scheme}://{engine.host}/{str(link).lstrip('/')}"
