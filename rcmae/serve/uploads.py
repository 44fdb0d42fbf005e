"""What `POST /score` accepts: one WAV file (the body, or a multipart upload), its machine from fields or from a
DCASE file name, within a size and a duration limit read from the file's header before anything is decoded, from
the service's own page or an origin it allows. Everything else is an `UploadError` with an HTTP status."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from urllib.parse import urlsplit

import soundfile as sf

from rcmae.api import Detector, Prepared
from rcmae.data.audio import AudioError, decode
from rcmae.data.names import attributes_of, dcase_id, machine_id_of
from rcmae.errors import RcmaeError

RAW_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "application/octet-stream")
# uncompressed PCM in a RIFF container: its decoded size is bounded by the upload's (a compressed format such as FLAC
# can hold hours of audio in a few megabytes, all of it decoded before its length could be checked)
WAV_FORMATS = ("WAV", "WAVEX", "RF64")


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 32 * 2**20    # an upload's size: 17 minutes of 16 kHz 16-bit mono
    max_seconds: float = 600.0     # a recording's length
    # how long an upload may take to arrive once its headers have: a request waiting for its body holds one of the
    # replica's request slots, so a client that never sends it would hold the slot for as long as it stays connected
    arrival_seconds: float = 30.0

    def __post_init__(self):
        if not (self.max_bytes >= 1 and all(math.isfinite(s) and s > 0 for s in (self.max_seconds,
                                                                                  self.arrival_seconds))):
            raise RcmaeError(f"upload limits must be positive: {self.max_bytes} bytes, {self.max_seconds} s long, "
                             f"{self.arrival_seconds} s to arrive")


class UploadError(RcmaeError):
    """A request the service refuses: `status` is its HTTP status (4xx), the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_declared_size(content_length: str | None, limits: Limits) -> None:
    """Refuse a body whose declared length is over the limit before reading it."""
    if content_length is None:
        return
    if not content_length.isdigit():
        raise UploadError(400, f"Content-Length {content_length!r} is not a number")
    if int(content_length) > limits.max_bytes:
        raise UploadError(413, f"upload of {int(content_length)} bytes: the limit is {limits.max_bytes} bytes")


def check_origin(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> None:
    """Refuse (403) a browser request sent from another site's page: a web page may POST to a service on the
    loopback address. Requests without an Origin (curl, scripts) and from the service's own page pass."""
    if origin is None:
        return
    own = urlsplit(origin).netloc == (host or "")
    if not own and origin.rstrip("/") not in allowed:
        raise UploadError(403, f"requests from the page at {origin} are refused: start the service with "
                               f"--allow-origin {origin} to accept them")


def check_wav_header(data: bytes, name: str, limits: Limits) -> None:
    """Refuse what is not a WAV file, or one longer than the limit, from its header alone."""
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as error:  # soundfile raises several types for what it cannot read
        raise UploadError(400, f"{name}: unreadable audio, not a WAV file ({type(error).__name__})") from None
    if info.format not in WAV_FORMATS:
        raise UploadError(415, f"{name}: {info.format} audio: the service takes WAV files (PCM)")
    seconds = info.frames / max(info.samplerate, 1)
    if seconds > limits.max_seconds:
        raise UploadError(413, f"{name}: {seconds:.1f} s of audio, the limit is {limits.max_seconds:g} s")


def media_type(content_type: str | None) -> str:
    """`multipart`, `raw` (a WAV body), or an `UploadError` (415) naming what is accepted."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return "multipart"
    if kind in RAW_TYPES or kind == "":
        return "raw"
    raise UploadError(415, f"Content-Type {kind!r}: send a WAV file as the body ({', '.join(RAW_TYPES[:2])}) or "
                           f"as the `file` field of multipart/form-data")


def machine_of(file_name: str | None, machine_type: str | None, machine_id: str | None,
               machines: list[str]) -> tuple[str, str]:
    """The machine the fields name; the ID may come from a DCASE file name, the type from the only type the
    model knows with that ID."""
    machine_id = machine_id or (machine_id_of(file_name) if file_name else None)
    if machine_id and not machine_type:
        wanted = dcase_id(machine_id)
        types = sorted({key.split("/")[0] for key in machines if key.split("/")[1] == wanted})
        machine_type = types[0] if len(types) == 1 else None
    if machine_type and machine_id:
        return machine_type, machine_id
    missing = " and ".join(name for name, value in (("machine_type", machine_type), ("machine_id", machine_id))
                           if not value)
    raise UploadError(422, f"which machine? give {missing} (form fields or query parameters)")


def read_upload(data: bytes, file_name: str | None, machine_type: str | None, machine_id: str | None,
                detector: Detector, limits: Limits) -> Prepared:
    """An upload's bytes decoded, checked against the limits and the model's machines, and prepared."""
    name = file_name or "upload"
    if not data:
        raise UploadError(400, "empty upload: send a WAV file")
    if len(data) > limits.max_bytes:
        raise UploadError(413, f"{name}: {len(data)} bytes, the limit is {limits.max_bytes} bytes")
    machine_type, machine_id = machine_of(file_name, machine_type, machine_id, detector.machines)
    check_wav_header(data, name, limits)
    try:
        samples, rate = decode(data, name)
    except AudioError as error:
        raise UploadError(400, str(error)) from None
    seconds = samples.shape[-1] / rate
    if seconds > limits.max_seconds:
        raise UploadError(413, f"{name}: {seconds:.1f} s of audio, the limit is {limits.max_seconds:g} s")
    try:
        return detector.prepare(samples, rate, machine_type, machine_id, name, attributes_of(file_name or ""))
    except AudioError as error:
        raise UploadError(400, str(error)) from None
    except RcmaeError as error:
        raise UploadError(422, str(error)) from None
