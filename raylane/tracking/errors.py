"""Tell a passing MLflow failure (server down, timeout, 5xx, a locked SQLite file) from one that
will repeat (a bad request, a deleted experiment): the first is worth a retry, the second not."""

from __future__ import annotations

from collections.abc import Iterator

from mlflow.exceptions import MlflowException

# HTTP statuses a server answers while it (or a proxy in front of it) cannot serve for now.
_TRANSIENT_STATUS = {429, 500, 502, 503, 504}
# MLflow's wrapper of a request that never got an answer (connection refused, reset, retries).
_NO_ANSWER = "API request to "


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says MLflow could not be reached or
    could not answer for now, as opposed to answering that the request is wrong."""
    for err in _chain(exc):
        if isinstance(err, ConnectionError | TimeoutError):
            return True
        name = type(err).__module__ + "." + type(err).__qualname__
        if name.startswith(("requests.exceptions.", "urllib3.exceptions.")) and any(
            word in name for word in ("Connection", "Timeout", "Retry", "Protocol", "Chunked")
        ):
            return True
        if name.startswith("sqlalchemy.exc.") and "OperationalError" in name:
            return True  # SQLite locked or unopenable, a database server gone
        if isinstance(err, MlflowException):
            if str(err.message).startswith(_NO_ANSWER):
                return True
            status = getattr(err, "get_http_status_code", lambda: 0)()
            if err.error_code in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED") or (
                type(err).__name__ == "RestException" and status in _TRANSIENT_STATUS
            ):
                return True
    return False
