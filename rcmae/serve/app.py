"""The live service: a Ray Serve deployment holding one `Detector` per replica behind a FastAPI ingress.

    POST /score     a WAV body (machine_type / machine_id / filename as query parameters) or a multipart upload
                    (`file`, with machine_type / machine_id fields or a DCASE file name) -> the API's `Result` as
                    JSON; `?view=1` adds the recording's log-mel for the page
    GET  /healthz   {"status": "ok", the machines, the method, ...}
    GET  /          the web page (upload a file or record from the microphone)

Requests are scored in batches (`@serve.batch`: the windows of every waiting request share the model's passes).
`rcmae serve` runs it; `serve run rcmae.serve.app:build checkpoint=DIR` or a Serve config YAML
(`cluster/serve/rcmae-serve.yaml`, `serve deploy`) does the same on a cluster.
"""


import asyncio
import dataclasses
import hmac
import logging
import math
import os
import signal
import socket
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict
from ray import serve
from starlette.formparsers import MultiPartException

import rcmae
from rcmae.api import Detector, Prepared, Result
from rcmae.distributed.ray_internals import serve_replica_grpc_on
from rcmae.distributed.runtime import LOOPBACK, on_loopback_node
from rcmae.errors import RcmaeError
from rcmae.models.checkpoint import META
from rcmae.serve.uploads import Limits, UploadError, check_declared_size, check_origin, media_type, read_upload
from rcmae.serve.view import logmel_view
from rcmae.stores import fetched

log = logging.getLogger(__name__)
MIN_TOKEN_CHARS = 16
PAGE = resources.files("rcmae.serve").joinpath("page.html")
KEEP_ALIVE_S = 5  # an idle connection is closed after this long (uvicorn's default; Serve's 90 s lets them pile up)
api = FastAPI(title="rcmae", version=rcmae.__version__, redoc_url=None,
              description="Scores recordings of machines with a fine-tuned RC-MAE model (higher: more anomalous).")
SCORE_BODY = {  # what POST /score reads itself (the raw body or the form), for the API page at /docs
    "required": True,
    "content": {
        "audio/wav": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "one WAV file"},
            "machine_type": {"type": "string"}, "machine_id": {"type": "string", "description": "e.g. 00"}}}},
    },
}
SCORE_ERRORS = {status: {"description": why, "content": {"application/json": {"example": {"error": why}}}}
                for status, why in {
                    400: "unreadable, empty or silent audio; a multipart upload without `file`",
                    401: "no or another token (the service was started with --token-file)",
                    403: "a browser request from another site's page (--allow-origin names the allowed ones)",
                    408: "the body did not arrive within --upload-timeout-s of its headers",
                    413: "over --max-upload-mb, or over --max-seconds of audio (read from the WAV header)",
                    415: "another content type, or a file that is not WAV",
                    422: "no machine given, or one the model does not know"}.items()}


@dataclass(frozen=True)
class ServiceSettings:
    checkpoint: str                    # a fine-tuned model folder
    method: str | None = None          # the score method (default: the model's)
    aggregate: str = "mean"            # a long recording's score from its windows'
    max_batch_size: int = 8            # requests scored together; 1 turns batching off
    batch_wait_s: float = 0.005        # how long a batch waits to fill
    limits: Limits = Limits()
    allow_origins: tuple[str, ...] = ()  # other sites whose pages may POST here (the service's own page always may)
    token_file: str | None = None        # a file holding the token POST /score must bring (Authorization: Bearer)

    def __post_init__(self):
        if not (self.max_batch_size >= 1 and math.isfinite(self.batch_wait_s) and self.batch_wait_s >= 0):
            raise RcmaeError(f"batching: max_batch_size {self.max_batch_size} must be >= 1 and batch_wait_s "
                             f"{self.batch_wait_s} >= 0")
        if self.token_file is not None:
            read_token(self.token_file)  # here, before Ray starts: each replica reads it again
        if not (fetched(self.checkpoint) / META).is_file():  # a store URI: checked in its fetched copy
            raise RcmaeError(f"{self.checkpoint}: not a fine-tuned model folder (no meta.json); pass "
                             f"`rcmae finetune`'s model folder, e.g. runs/main/finetune/model")


class ServiceArgs(BaseModel):
    """The application's arguments, typed: a Serve config's `args`, or `serve run rcmae.serve.app:build KEY=VALUE`
    (Serve validates them against this model before `build` runs; strings are converted)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    checkpoint: str
    method: str | None = None
    aggregate: str = "mean"
    max_batch_size: int = 8
    batch_wait_s: float = 0.005
    max_upload_mb: float = Limits.max_bytes / 2**20
    max_seconds: float = Limits.max_seconds
    upload_timeout_s: float = Limits.arrival_seconds
    allow_origins: list[str] | str = []  # a list, or one comma-separated string
    token_file: str | None = None
    replicas: int | None = None  # a fixed number of replicas (default: autoscaling)

    def settings(self) -> ServiceSettings:
        limits = Limits(int(self.max_upload_mb * 2**20), self.max_seconds, self.upload_timeout_s)
        return ServiceSettings(self.checkpoint, self.method or None, self.aggregate, self.max_batch_size,
                               self.batch_wait_s, limits, origins(self.allow_origins), self.token_file or None)


def origins(value: str | list | tuple) -> tuple[str, ...]:
    """Allowed origins from a list, or from one comma-separated string (a `serve run` argument)."""
    values = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(origin).strip().rstrip("/") for origin in values if str(origin).strip())


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def read_token(path: str) -> str:
    """The token in `path` (surrounding whitespace dropped): one line naming the file when it cannot serve."""
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as failure:
        raise RcmaeError(f"{path}: cannot read the token file ({failure})") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise RcmaeError(f"{path}: a token is one word of at least {MIN_TOKEN_CHARS} characters, e.g. from "
                         f"`python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return token


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header brings the token (compared in constant time)."""
    return header is not None and hmac.compare_digest(header.encode(), f"Bearer {token}".encode())


async def read_body(request: Request, limits: Limits) -> bytes:
    """The body, refused (413) as soon as it passes the size limit, whatever Content-Length said."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_bytes:
            raise UploadError(413, f"upload over the limit of {limits.max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request, limits: Limits, machine_type: str | None, machine_id: str | None,
                    filename: str | None) -> tuple[bytes, str | None, str | None, str | None]:
    """(file bytes, file name, machine type, machine ID) of a multipart upload; form fields win over the query."""
    try:
        form = await request.form(max_files=1, max_fields=8, max_part_size=limits.max_bytes)
    except MultiPartException as refused:
        raise UploadError(400, f"multipart upload: {refused.message}") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise UploadError(400, "multipart upload without a `file` field holding the WAV file")
    data = await upload.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise UploadError(413, f"{upload.filename}: over the limit of {limits.max_bytes} bytes")
    def field(name: str, default: str | None) -> str | None:
        return str(form.get(name) or "") or default

    return data, upload.filename or filename, field("machine_type", machine_type), field("machine_id", machine_id)


@serve.deployment(max_ongoing_requests=64)
@serve.ingress(api)
class ScoreService:
    def __init__(self, settings: ServiceSettings):
        if on_loopback_node():  # a local instance: this replica's own gRPC server on loopback too
            serve_replica_grpc_on(LOOPBACK)
        self.settings = settings
        self.token = read_token(settings.token_file) if settings.token_file else None
        self.detector = Detector.load(settings.checkpoint, settings.method, settings.aggregate)
        self.score_batch.set_max_batch_size(settings.max_batch_size)
        self.score_batch.set_batch_wait_timeout_s(settings.batch_wait_s)

    @api.get("/healthz")
    def healthz(self) -> dict:
        return dict(status="ok", version=rcmae.__version__, machines=self.detector.machines,
                    method=self.detector.method, aggregate=self.settings.aggregate,
                    sample_rate=self.detector.sample_rate, clip_seconds=self.detector.clip_seconds,
                    max_upload_bytes=self.settings.limits.max_bytes, max_seconds=self.settings.limits.max_seconds,
                    token_required=self.token is not None)

    @api.get("/", response_class=HTMLResponse)
    def page(self) -> str:
        return PAGE.read_text()

    @api.post("/score", openapi_extra={"requestBody": SCORE_BODY}, responses=SCORE_ERRORS,
              summary="Score one WAV recording of a machine")
    async def score(self, request: Request, machine_type: str | None = None, machine_id: str | None = None,
                    filename: str | None = None, view: bool = False):
        limits = self.settings.limits
        if self.token is not None and not authorized(request.headers.get("authorization"), self.token):
            return JSONResponse({"error": "POST /score needs the service's token: Authorization: Bearer <token>"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        try:
            check_origin(request.headers.get("origin"), request.headers.get("host"), self.settings.allow_origins)
            check_declared_size(request.headers.get("content-length"), limits)
            try:
                async with asyncio.timeout(limits.arrival_seconds):
                    if media_type(request.headers.get("content-type")) == "multipart":
                        data, filename, machine_type, machine_id = await read_form(request, limits, machine_type,
                                                                                   machine_id, filename)
                    else:
                        data = await read_body(request, limits)
            except TimeoutError:
                raise UploadError(408, f"the upload did not arrive within {limits.arrival_seconds:g} s") from None
            prepared = await asyncio.to_thread(read_upload, data, filename, machine_type, machine_id,
                                               self.detector, limits)
        except UploadError as refused:
            return error(refused.status, str(refused))
        result = await self.score_batch(prepared)
        body = {k: v for k, v in dataclasses.asdict(result).items() if k != "maps"}
        seconds = len(prepared.wave) / self.detector.sample_rate
        body.update(machine=prepared.key, seconds=seconds, window_seconds=self.detector.clip_seconds or seconds)
        if view:
            body["view"] = await asyncio.to_thread(logmel_view, prepared.wave, self.detector.features,
                                                   self.detector.sample_rate)
        return body

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def score_batch(self, recordings: list[Prepared]) -> list[Result]:
        # in a thread: the replica's event loop keeps taking requests (the next batch fills while this one runs)
        return await asyncio.to_thread(self.detector.score_prepared, recordings)


def deployment_options(settings: ServiceSettings, replicas: int | None, resources: dict) -> dict:
    """A fixed `replicas`, or an autoscaling range up to one replica per GPU (GPU replicas) or per CPU."""
    gpus = int(resources.get("GPU", 0))
    options: dict = dict(ray_actor_options={"num_cpus": 1, "num_gpus": 1 if gpus else 0})
    if replicas is not None:
        options["num_replicas"] = replicas
    else:
        most = max(1, gpus or int(resources.get("CPU", 1)))
        options["autoscaling_config"] = dict(min_replicas=1, max_replicas=most,
                                             target_ongoing_requests=2 * settings.max_batch_size)
    return options


def application(settings: ServiceSettings, replicas: int | None = None, resources: dict | None = None):
    """The Serve application: the deployment bound to its settings."""
    import ray

    if replicas is not None and replicas < 1:
        raise RcmaeError(f"--replicas {replicas}: at least 1")
    if resources is None:
        resources = ray.cluster_resources() if ray.is_initialized() else {}
    options = deployment_options(settings, replicas, resources)
    return ScoreService.options(**options).bind(settings)


def build(args: ServiceArgs):
    """The application builder `serve run rcmae.serve.app:build checkpoint=DIR` and Serve config YAMLs name."""
    return application(args.settings(), args.replicas)


def run_service(settings: ServiceSettings, host: str = LOOPBACK, port: int = 8000,
                replicas: int | None = None) -> None:
    """`rcmae serve`: the application on this machine's Ray (or RAY_ADDRESS's) until Ctrl-C or SIGTERM."""
    from rcmae.distributed.runtime import ensure_ray

    Detector.load(settings.checkpoint, settings.method, settings.aggregate)  # a bad folder: one line, here
    if settings.token_file is None and host not in (LOOPBACK, "localhost", "::1"):
        log.warning(f"serve: --host {host} takes requests from the network and nothing checks who sends them: "
                    f"pass --token-file FILE")
    if not os.environ.get("RAY_ADDRESS"):  # a local Ray: Serve's proxy will listen here
        require_free(host, port)
    ensure_ray()
    serve.start(http_options={"host": host, "port": port, "keep_alive_timeout_s": KEEP_ALIVE_S})
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        serve.run(application(settings, replicas), name="rcmae", route_prefix="/")
        print(f"serving http://{host}:{port}/ (POST /score, GET /healthz; Ctrl-C stops)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log.info("stopping the service")
    finally:
        signal.signal(signal.SIGTERM, previous)
        serve.shutdown()


def require_free(host: str, port: int) -> None:
    """A port something else holds is the user's to change, said before Ray starts."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise RcmaeError(f"cannot listen on {host}:{port} ({error.strerror}): choose another --port or --host") \
                from None


def stop(signum, frame) -> None:
    raise KeyboardInterrupt
