"""The Ray Serve deployment: a registered ONNX model over HTTP (``raylane.serving.app:app``).

Routes: ``/predict``; the Open Inference Protocol (``/v2/...``); the MLflow scoring protocol
(``/invocations``, ``/ping``, ``/health``, ``/version``); ``/healthz``; ``/metadata``; and the
OpenAPI schema at ``/openapi.json`` (``/docs``). Configuration arrives as the deployment's
``user_config`` (see ``serve/config.yaml`` and :mod:`raylane.serving.settings`).
"""


import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

import raylane
from raylane.onnx_model import Prediction
from raylane.serving import fastpath, protocols, schemas
from raylane.serving.batcher import MicroBatcher
from raylane.serving.metrics import ServingMetrics
from raylane.serving.prediction_log import PredictionLog
from raylane.serving.predictor import LoadedModel, ModelHolder
from raylane.serving.requests import Feeds, RequestError, decode_json, orjson
from raylane.serving.settings import ServingSettings

log = logging.getLogger("ray.serve")
JSON_TYPES = {"", "application/json", "text/json", "application/x-www-form-urlencoded"}
MLFLOW_CODES = {400: "BAD_REQUEST", 404: "RESOURCE_DOES_NOT_EXIST", 413: "PAYLOAD_TOO_LARGE",
                415: "UNSUPPORTED_MEDIA_TYPE", 503: "TEMPORARILY_UNAVAILABLE"}


def dumps(obj: Any) -> bytes:
    if orjson is not None:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(obj, default=lambda a: a.tolist()).encode()  # pragma: no cover


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


def error_response(err: RequestError, mlflow_style: bool = False) -> Response:
    if mlflow_style:
        body = {"error_code": MLFLOW_CODES.get(err.status, "BAD_REQUEST"), "message": err.message,
                "field": err.field, "reason": err.reason}
    else:
        body = {"error": err.message, "field": err.field, "reason": err.reason}
    return json_response(body, err.status)


def _body_too_large(limit: int) -> RequestError:
    return RequestError(
        f"body is over the limit of {limit} bytes; send fewer rows per request",
        status=413, field="body", reason="body_too_large",
    )


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class RaylaneAPI(FastAPI):
    """FastAPI whose OpenAPI schema also holds the hand-parsed request bodies' schemas."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            spec = get_openapi(title=self.title, version=self.version,
                               description=self.description, routes=self.routes)
            spec.setdefault("components", {}).setdefault("schemas", {}).update(
                schemas.request_component_schemas()
            )
            self.openapi_schema = spec
        return self.openapi_schema


api = RaylaneAPI(
    title="raylane model server",
    version=raylane.__version__,
    description="A registered ONNX model served by Ray Serve: /predict, the Open Inference "
    "Protocol (KServe V2) and the MLflow scoring protocol. Errors are JSON naming the field.",
)
# POST /predict, /invocations and /v2/models/.../infer skip FastAPI's routing (see fastpath.py)
api.add_middleware(fastpath.PredictionFastPath)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return json_response(
        {"error": f"{where}: {first.get('msg', 'invalid request')}", "field": where,
         "reason": "validation"},
        422,
    )


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    detail = exc.detail if exc.status_code != 404 else f"no route {request.url.path}"
    return json_response({"error": detail, "field": None, "reason": reason}, exc.status_code)


ERRORS = {c: {"model": schemas.ErrorResponse} for c in (400, 404, 413, 415, 503)}
MLFLOW_ERRORS = {c: {"model": schemas.MlflowErrorResponse} for c in (400, 413, 415, 503)}
DEFAULT_USER_CONFIG = {"model_uri": os.environ.get("RAYLANE_MODEL_URI", "models:/credit@champion")}


@serve.deployment(
    name="RaylaneModel",
    max_ongoing_requests=64,
    health_check_period_s=10,
    user_config=DEFAULT_USER_CONFIG,
)
@serve.ingress(api)
class ModelServer:
    """One replica: a :class:`ModelHolder`, its background registry poll and its routes."""

    def __init__(self) -> None:
        self.metrics = ServingMetrics()
        self.holder = ModelHolder(on_load=self.metrics.model_load)
        self.settings = ServingSettings()
        self.plog: PredictionLog | None = None
        self._swap_lock = asyncio.Lock()
        self._batcher: MicroBatcher = MicroBatcher(self._predict_batch)
        self._housekeeping: asyncio.Task | None = None

    # ------------------------------------------------------------ lifecycle

    async def reconfigure(self, user_config: dict) -> None:
        """Apply a new ``user_config``. The first call must load the model (else not ready)."""
        settings = ServingSettings.model_validate(user_config or {})
        b = settings.batching
        self._batcher.set_max_batch_size(b.max_batch_size)
        self._batcher.set_batch_wait_timeout_s(b.batch_wait_timeout_s)
        async with self._swap_lock:
            await asyncio.to_thread(
                self.holder.ensure, settings.model_uri, settings.resolved_tracking_uri(),
                settings.intra_op_threads,
            )
        old_log, self.plog = self.plog, None
        if old_log is not None:
            await asyncio.to_thread(old_log.flush)
        pl = settings.prediction_log
        if pl.enabled and pl.sample_rate > 0:
            self.plog = PredictionLog(
                directory=pl.directory, sample_rate=pl.sample_rate, flush_rows=pl.flush_rows,
                flush_interval_s=pl.flush_interval_s, max_total_bytes=pl.max_total_bytes,
            )
        self.settings = settings
        app = getattr(self, "app", None)  # the replica's FastAPI app (set by @serve.ingress)
        if app is not None:
            fastpath.bind(app, self)
        if self._housekeeping is None or self._housekeeping.done():
            self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep())

    async def _housekeep(self) -> None:
        """Flush metrics, poll the registry (alias moved? swap), flush the prediction log."""
        last_poll = time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            await self.metrics.flush_async()
            s = self.settings
            if self.plog is not None and self.plog._rows:
                self.plog._maybe_flush()
            if s.poll_interval_s <= 0 or time.monotonic() - last_poll < s.poll_interval_s:
                continue
            last_poll = time.monotonic()
            try:
                async with self._swap_lock:
                    await asyncio.to_thread(
                        self.holder.ensure, s.model_uri, s.resolved_tracking_uri(),
                        s.intra_op_threads,
                    )
            except Exception:  # ensure() records failures; keep polling whatever happens
                log.exception("raylane: registry poll failed")

    def check_health(self) -> None:
        if self.holder.current is None:
            raise RuntimeError("no model loaded")

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # Ray may be shutting down: best effort
            self.metrics.flush()
        if self.plog is not None:
            self.plog.flush()

    def fast_route(self, path: str) -> fastpath.Handler | None:
        """The handler of a POST to ``path`` for :class:`fastpath.PredictionFastPath`."""
        if path == "/predict":
            return self.predict
        if path == "/invocations":
            return self.invocations
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            parts = path[len("/v2/models/"):-len("/infer")].split("/")
            if len(parts) == 1 and parts[0]:
                return partial(self.v2_infer, parts[0])
            if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
                return partial(self.v2_infer_version, parts[0], parts[2])
        return None

    # ------------------------------------------------------------ prediction core

    def _predict_batch(self, items: list[tuple[LoadedModel, Feeds, int]]) -> list[Prediction]:
        """Run queued small requests as one graph call per model (a swap may split a batch)."""
        if len(items) == 1:
            model, feeds, _ = items[0]
            return [model.predict(feeds)]
        results: list[Prediction | None] = [None] * len(items)
        groups: dict[int, list[int]] = {}
        for i, (model, _, _) in enumerate(items):
            groups.setdefault(id(model), []).append(i)
        for idx in groups.values():
            model = items[idx[0]][0]
            names = model.schema.feature_names
            feeds = {c: np.concatenate([items[i][1][c] for i in idx]) for c in names}
            pred = model.predict(feeds)
            start = 0
            for i in idx:
                end = start + items[i][2]
                results[i] = Prediction(
                    labels=None if pred.labels is None else pred.labels[start:end],
                    probabilities=None if pred.probabilities is None
                    else pred.probabilities[start:end],
                    values=None if pred.values is None else pred.values[start:end],
                )
                start = end
        return results  # type: ignore[return-value]

    async def _read_body(self, request: Request, csv_ok: bool = False) -> tuple[bytes, bool]:
        """The body within the size limit; (body, is_csv). Raises 413/415 RequestErrors."""
        media = _media_type(request)
        is_csv = csv_ok and media == "text/csv"
        if not is_csv and media not in JSON_TYPES and not media.endswith("+json"):
            expected = "application/json or text/csv" if csv_ok else "application/json"
            raise RequestError(
                f"content type {media!r} is not supported; expected {expected}",
                status=415, field="Content-Type", reason="unsupported_media_type",
            )
        limit = self.settings.limits.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit():
            if int(length) > limit:
                raise _body_too_large(limit)
            return await request.body(), is_csv
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _body_too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks), is_csv

    async def _handle(
        self, request: Request, route: str, parse: Callable, respond: Callable,
        mlflow_style: bool = False, csv_ok: bool = False,
    ) -> Response:
        started = time.perf_counter()
        model = self.holder.current
        try:
            if model is None:
                raise RequestError("no model loaded yet", status=503, reason="not_ready")
            body, is_csv = await self._read_body(request, csv_ok)
            if is_csv:
                obj = None
                feeds, n = protocols.parse_csv(body, model.schema, self.settings.limits.max_rows)
            else:
                obj = decode_json(body)
                feeds, n = parse(obj, model.schema, self.settings.limits.max_rows)
            b = self.settings.batching
            if b.enabled and n <= b.max_rows_per_item:
                pred = await self._batcher.submit((model, feeds, n))
            else:
                pred = model.predict(feeds)
            out = respond(model, pred, n, obj)
        except RequestError as err:
            self.metrics.rejected_request(err.reason, route)
            return error_response(err, mlflow_style)
        except Exception as exc:  # e.g. ONNX Runtime refusing an input the checks let through
            log.warning("raylane: %s rejected by the model: %s", route, exc)
            self.metrics.rejected_request("model_error", route)
            err = RequestError(f"the model could not score this input: {exc}",
                               reason="model_error")
            return error_response(err, mlflow_style)
        response = json_response(out)
        self.metrics.predicted(
            model.name, model.version, route, n, (time.perf_counter() - started) * 1000
        )
        if self.plog is not None:
            self.plog.record(model.name, model.version, model.schema, feeds, n, pred)
        return response

    def _model_or_error(self, name: str, version: str | None = None) -> LoadedModel:
        model = self.holder.current
        if model is None:
            raise RequestError("no model loaded yet", status=503, reason="not_ready")
        if name != model.name:
            raise RequestError(
                f"unknown model {name!r}; this server serves {model.name!r}", status=404,
                field="model_name", reason="unknown_model",
            )
        if version is not None and version != model.version:
            raise RequestError(
                f"model {name!r} version {version!r} is not loaded; serving version "
                f"{model.version!r}", status=404, field="model_version", reason="unknown_version",
            )
        return model

    # ------------------------------------------------------------ /predict

    @api.post(
        "/predict", response_model=schemas.PredictResponse, responses=ERRORS,
        openapi_extra=schemas.json_body(schemas.PredictRecords, schemas.PredictSplit),
        summary="Predict rows given as records or as columns + data",
    )
    async def predict(self, request: Request) -> Response:
        def respond(model: LoadedModel, pred: Prediction, n: int, obj: Any) -> dict:
            return protocols.predict_response(model.name, model.version, model.schema, pred)

        return await self._handle(request, "predict", protocols.parse_predict, respond)

    @api.get("/healthz", response_model=schemas.Health, responses={503: ERRORS[503]})
    async def healthz(self) -> Response:
        model = self.holder.current
        if model is None:
            return json_response({"status": "loading"}, 503)
        return json_response(
            {"status": "ok", "model_name": model.name, "model_version": model.version}
        )

    @api.get("/metadata", response_model=schemas.ModelMetadata, responses={503: ERRORS[503]})
    async def metadata(self) -> Response:
        model = self.holder.current
        if model is None:
            return json_response({"error": "no model loaded yet", "field": None,
                                  "reason": "not_ready", "last_error": self.holder.last_error},
                                 503)
        reg = model.registered
        return json_response({
            "name": reg.name, "version": reg.version, "alias": reg.alias, "model_uri": model.uri,
            "run_id": reg.run_id, "task": reg.schema.task, "target": reg.schema.target,
            "inputs": [c.model_dump() for c in reg.schema.columns],
            "outputs": protocols.v2_outputs(reg.schema),
            "class_labels": reg.schema.class_labels, "loaded_at": model.loaded_at,
            "last_error": self.holder.last_error,
        })

    # ------------------------------------------------------------ Open Inference Protocol

    @api.get("/v2", response_model=schemas.V2ServerMetadata)
    async def v2_server(self) -> Response:
        return json_response({"name": "raylane", "version": raylane.__version__,
                              "extensions": []})

    @api.get("/v2/health/live", response_model=schemas.Live)
    async def v2_live(self) -> Response:
        return json_response({"live": True})

    @api.get("/v2/health/ready", response_model=schemas.Ready, responses={503: ERRORS[503]})
    async def v2_ready(self) -> Response:
        ready = self.holder.current is not None
        return json_response({"ready": ready}, 200 if ready else 503)

    def _v2_metadata(self, name: str, version: str | None) -> Response:
        try:
            model = self._model_or_error(name, version)
        except RequestError as err:
            return error_response(err)
        return json_response({
            "name": model.name, "versions": [model.version], "platform": "onnxruntime_onnx",
            "inputs": protocols.v2_inputs(model.schema),
            "outputs": protocols.v2_outputs(model.schema),
        })

    @api.get("/v2/models/{name}", response_model=schemas.V2ModelMetadata, responses=ERRORS)
    async def v2_model(self, name: str) -> Response:
        return self._v2_metadata(name, None)

    @api.get("/v2/models/{name}/versions/{version}", response_model=schemas.V2ModelMetadata,
             responses=ERRORS)
    async def v2_model_version(self, name: str, version: str) -> Response:
        return self._v2_metadata(name, version)

    def _v2_ready(self, name: str, version: str | None) -> Response:
        try:
            self._model_or_error(name, version)
        except RequestError as err:
            return error_response(err)
        return json_response({"ready": True})

    @api.get("/v2/models/{name}/ready", response_model=schemas.Ready, responses=ERRORS)
    async def v2_model_ready(self, name: str) -> Response:
        return self._v2_ready(name, None)

    @api.get("/v2/models/{name}/versions/{version}/ready", response_model=schemas.Ready,
             responses=ERRORS)
    async def v2_model_version_ready(self, name: str, version: str) -> Response:
        return self._v2_ready(name, version)

    async def _v2_infer(self, request: Request, name: str, version: str | None) -> Response:
        try:
            self._model_or_error(name, version)
            if "inference-header-content-length" in request.headers:
                raise RequestError(
                    "the binary tensor extension is not supported; send JSON tensors "
                    "(tritonclient.http: binary_data=False for inputs and outputs)",
                    field="Inference-Header-Content-Length", reason="binary_tensor",
                )
        except RequestError as err:
            self.metrics.rejected_request(err.reason, "v2_infer")
            return error_response(err)
        requested: dict[str, list[str]] = {}

        def parse(obj: Any, schema, max_rows: int):
            feeds, n = protocols.parse_v2(obj, schema, max_rows)
            requested["outputs"] = protocols.v2_requested_outputs(obj, schema)
            return feeds, n

        def respond(model: LoadedModel, pred: Prediction, n: int, obj: Any) -> dict:
            return protocols.v2_response(
                model.name, model.version, model.schema, pred, n, requested["outputs"],
                obj.get("id"),
            )

        return await self._handle(request, "v2_infer", parse, respond)

    @api.post("/v2/models/{name}/infer", response_model=schemas.V2InferResponse,
              responses=ERRORS, openapi_extra=schemas.json_body(schemas.V2InferRequest))
    async def v2_infer(self, name: str, request: Request) -> Response:
        return await self._v2_infer(request, name, None)

    @api.post("/v2/models/{name}/versions/{version}/infer",
              response_model=schemas.V2InferResponse, responses=ERRORS,
              openapi_extra=schemas.json_body(schemas.V2InferRequest))
    async def v2_infer_version(self, name: str, version: str, request: Request) -> Response:
        return await self._v2_infer(request, name, version)

    # ------------------------------------------------------------ MLflow scoring protocol

    @api.post("/invocations", response_model=schemas.InvocationsResponse,
              responses=MLFLOW_ERRORS,
              openapi_extra=schemas.json_body(schemas.InvocationsRequest, csv=True))
    async def invocations(self, request: Request) -> Response:
        def respond(model: LoadedModel, pred: Prediction, n: int, obj: Any) -> dict:
            return protocols.invocations_response(model.schema, pred)

        return await self._handle(request, "invocations", protocols.parse_invocations, respond,
                                  mlflow_style=True, csv_ok=True)

    @api.get("/ping", response_class=Response, responses={503: MLFLOW_ERRORS[503]})
    async def ping(self) -> Response:
        ready = self.holder.current is not None
        return Response("\n", status_code=200 if ready else 503, media_type="text/plain")

    @api.get("/health", response_class=Response, responses={503: MLFLOW_ERRORS[503]})
    async def health(self) -> Response:
        return await self.ping()

    @api.get("/version", response_class=Response)
    async def version(self) -> Response:
        return Response(f"raylane {raylane.__version__}", media_type="text/plain")


app = ModelServer.bind()


def build_app(args: dict[str, Any]) -> Any:
    """Application builder: ``serve run raylane.serving.app:build_app model_uri=models:/x/1``."""
    return ModelServer.options(user_config={**DEFAULT_USER_CONFIG, **args}).bind()
