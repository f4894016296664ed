"""Asking the Allen API a metadata question, with retries, a timeout and one clear failure line.

Both Allen pulls (two-photon, :mod:`deepmouse.data.allen`; Neuropixels,
:mod:`deepmouse.data.neuropixels`) run the AllenSDK's own queries, which go
through ``urllib`` (the Brain Observatory cache) or ``requests`` (the ecephys
warehouse engine). :func:`query_with_retries` runs one such query so that

- a host that cannot be reached at all (no network, unknown name, refused
  connection) stops at once with a :class:`~deepmouse.errors.SourceError`
  naming the host and what was asked: waiting would only delay the message;
- a silent host, a dropped connection or a 408/429/5xx answer is retried with
  exponential backoff (``backoff_s``, ``2 * backoff_s``, ...), at most
  ``retries`` times;
- any other HTTP error, or an answer that is not JSON, stops at once.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.error import HTTPError, URLError

import requests

from deepmouse.data.download import OFFLINE_HINT, describe_network_error
from deepmouse.errors import SourceError

Progress = Callable[[str], None]

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP answers that a later attempt may not get again."""


def query_with_retries(host: str, what: str, query: Callable[[], Any], *, retries: int, timeout_s: float,
                       backoff_s: float, progress: Progress, offline_hint: str = OFFLINE_HINT) -> Any:
    """Run ``query()`` (one AllenSDK metadata query), retrying what a later attempt may not repeat.

    Parameters
    ----------
    host : str
        ``host`` or ``host:port`` asked, for the messages.
    what : str
        What is asked for, e.g. ``"the Neuropixels session table"``.
    query : callable
        Runs the query; exceptions of ``urllib``, ``requests`` and ``http.client`` are classified
        as described in the module docstring; a :class:`~deepmouse.errors.DeepmouseError` passes
        through unchanged.
    retries : int
        Failed attempts repeated before giving up.
    timeout_s : float
        Seconds a ``urllib`` query may wait on its socket (the process default, set for the call
        and restored after); ``requests`` queries carry their own timeout.
    offline_hint : str
        What to do instead, said when the host cannot be reached at all.

    Raises
    ------
    SourceError
        If the host cannot be reached, refuses the query, answers something that is not JSON, or
        fails ``retries + 1`` times.
    """
    failure = ""
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff_s * 2 ** (attempt - 1)
            progress(f"{host}: {failure} when asked for {what}; retry {attempt} of {retries} in {delay:.1f} s")
            time.sleep(delay)
        try:
            with socket_timeout(timeout_s):
                return query()
        except HTTPError as err:
            if err.code not in RETRYABLE_STATUS:
                raise SourceError(f"{host} answered HTTP {err.code} {err.reason} when asked for {what}") from err
            failure = f"HTTP {err.code} {err.reason}"
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else None
            reason = err.response.reason if err.response is not None else str(err)
            if status not in RETRYABLE_STATUS:
                raise SourceError(f"{host} answered HTTP {status} {reason} when asked for {what}") from err
            failure = f"HTTP {status} {reason}"
        except URLError as err:
            if not isinstance(err.reason, TimeoutError):
                raise SourceError(
                    f"could not reach {host} ({describe_network_error(err)}) to get {what}; {offline_hint}"
                ) from err
            failure = f"no answer within {timeout_s:g} s"
        except (TimeoutError, requests.Timeout):
            failure = f"no answer within {timeout_s:g} s"
        except requests.ConnectionError as err:
            if is_unreachable(err):
                raise SourceError(
                    f"could not reach {host} ({describe_network_error(err)}) to get {what}; {offline_hint}"
                ) from err
            failure = f"connection lost ({describe_network_error(err)})"
        except (ConnectionError, http.client.HTTPException) as err:
            failure = f"connection lost ({describe_network_error(err)})"
        except json.JSONDecodeError as err:  # requests' JSONDecodeError is one too
            raise SourceError(f"{host} answered the request for {what} with something that is not JSON "
                              f"({err}); is a proxy or login page in the way?") from err
    raise SourceError(f"{host} did not answer the request for {what} after {retries + 1} attempts: {failure}")


def is_unreachable(err: BaseException) -> bool:
    """Whether a ``requests`` error means no connection could be opened at all.

    urllib3 raises ``NewConnectionError`` (and its ``NameResolutionError``) when the name does
    not resolve, the port is closed or the network is down, wrapped several levels deep; a
    connection that opened and then broke, or timed out, is not "unreachable".
    """
    from urllib3.exceptions import NewConnectionError

    seen: set[int] = set()
    stack = [err]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (NewConnectionError, ConnectionRefusedError, socket.gaierror)):
            return True
        stack.extend(inner for inner in (getattr(current, "reason", None), current.__cause__, current.__context__,
                                         *current.args) if isinstance(inner, BaseException))
    return False


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Set the process-wide default socket timeout for a block, and restore it afterwards.

    The AllenSDK's ``urllib`` queries have no timeout of their own, so a silent network would
    hang them; the process default is the only handle.
    """
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def is_within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (both resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def relative_to_cache(path: Path, cache_dir: Path) -> str:
    """``path`` relative to ``cache_dir`` (posix), or as given where it lies elsewhere."""
    try:
        return Path(path).resolve().relative_to(Path(cache_dir).resolve()).as_posix()
    except ValueError:  # a manifest of the user's may keep files elsewhere
        return str(path)


def as_list(values) -> list | None:
    """A filter as a list, None (no filter) kept."""
    return None if values is None else list(values)
