"""The protocols the server speaks, registered in one place.

The FastAPI routes, the OpenAPI document (:mod:`raylane.serving.api`) and the ASGI fast path
(:mod:`raylane.serving.fastpath`) are all derived from :data:`PROTOCOLS`: adding a protocol is a
module exposing ``PROTOCOL`` (see :mod:`raylane.serving.protocols.base`) and one entry here.
"""

from raylane.serving.protocols import mlflow_scoring, native, v2
from raylane.serving.protocols.base import Protocol

PROTOCOLS: tuple[Protocol, ...] = (native.PROTOCOL, v2.PROTOCOL, mlflow_scoring.PROTOCOL)
