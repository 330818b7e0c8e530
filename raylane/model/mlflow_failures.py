"""What an MLflow failure is, decided once for training, release, serving and the console.

Each exception is read with the ones it was raised from (MLflow and the registry wrap network
errors): :func:`http_status` is what a server answered, :func:`is_transient` says MLflow could not
be reached or could not answer for now (worth a retry), :func:`is_missing` that what was asked
for does not exist (retrying cannot bring it back). Anything else is a request that will fail
again the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import requests
import urllib3
from mlflow.exceptions import MlflowException, RestException

# What a server (or a proxy in front of it) answers while it cannot serve for now.
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# MLflow error codes that mean "not now" wherever they were raised.
_FOR_NOW_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED",
                            "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"})
# MLflow's REST client: a request that got no answer ("API request to <url> failed with
# exception ...") versus one answered with a status but no JSON body ("API request to endpoint
# <path> failed with error code 403 != 200").
_NO_ANSWER_PREFIX = "API request to "
_ANSWERED_PREFIX = "API request to endpoint "
_ANSWERED_STATUS = re.compile(r"failed with error code (\d{3})")
# Network errors that mean no answer came; a certificate refused (SSLError) is no passing fault.
_NO_ANSWER_TYPES = (
    ConnectionError, TimeoutError,
    requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
    requests.exceptions.RetryError,
    urllib3.exceptions.MaxRetryError, urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.ProtocolError, urllib3.exceptions.TimeoutError,
)


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _status(err: BaseException) -> tuple[int | None, bool]:
    """The HTTP status ``err`` itself carries, and whether a server really answered with it
    (False: MLflow's in-process stores raise the status their server would answer)."""
    if isinstance(err, requests.HTTPError) and err.response is not None:
        return err.response.status_code, True
    if not isinstance(err, MlflowException):
        return None, False
    message = str(err.message)
    answered = _ANSWERED_STATUS.search(message)
    if answered and message.startswith(_ANSWERED_PREFIX):
        return int(answered.group(1)), True
    if message.startswith(_NO_ANSWER_PREFIX) and not message.startswith(_ANSWERED_PREFIX):
        return None, False
    return err.get_http_status_code(), isinstance(err, RestException)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status MLflow or its artifact store answered (401, 403, 404, 503, ...): the first
    in the chain a server sent, else the one an in-process MLflow error stands for (the most
    specific: 500 is MLflow's code for a wrapper); None when no answer came."""
    stood_for: list[int] = []
    for err in chain(exc):
        status, answered = _status(err)
        if answered:
            return status
        if status is not None:
            stood_for.append(status)
    return next((s for s in stood_for if s != 500), stood_for[0] if stood_for else None)


def transient_link(err: BaseException) -> bool:
    """Whether ``err`` itself (not what it was raised from) says MLflow could not be reached or
    could not answer for now."""
    if isinstance(err, _NO_ANSWER_TYPES) and not isinstance(err, requests.exceptions.SSLError):
        return True
    name = type(err).__module__ + "." + type(err).__qualname__
    if name.startswith("sqlalchemy.exc.") and "OperationalError" in name:
        return True  # SQLite locked or unopenable, a database server gone
    if isinstance(err, MlflowException):
        if err.error_code in _FOR_NOW_CODES:
            return True
        message = str(err.message)
        if message.startswith(_NO_ANSWER_PREFIX) and not message.startswith(_ANSWERED_PREFIX):
            return True
    status, answered = _status(err)
    return answered and status in _RETRYABLE_STATUS


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception in its chain says MLflow could not be reached or could
    not answer for now, as opposed to answering that the request is wrong."""
    return any(transient_link(err) for err in chain(exc))


def is_missing(exc: BaseException) -> bool:
    """Whether the registry or artifact store said what was asked for does not exist (a 404, an
    MLflow RESOURCE_DOES_NOT_EXIST, a local store's missing file) and nothing was transient."""
    if is_transient(exc):
        return False
    return http_status(exc) == 404 or any(isinstance(e, FileNotFoundError) for e in chain(exc))
