"""`rcmae serve`: what an upload may be (4xx otherwise), batches that score as requests alone do, and the live
service on a local Ray answering with `rcmae score`'s and the Python API's scores, in a real browser too."""

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from listeners import beyond_loopback
from rcmae import Detector
from rcmae.errors import EXIT, RcmaeError
from rcmae.serve.app import origins
from rcmae.serve.uploads import (
    Limits,
    UploadError,
    check_declared_size,
    check_origin,
    machine_of,
    media_type,
    read_upload,
)
from scores import same_score

ROOT = Path(__file__).resolve().parents[1]


def wav_bytes(wave: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def valve_clips(toy_root, count=3):
    return sorted((toy_root / "dev_data" / "valve" / "test").glob("*.wav"))[:count]


@pytest.fixture(scope="module")
def detector(finetuned_model):
    return Detector.load(finetuned_model)


def refused(status: int, call, *args) -> str:
    with pytest.raises(UploadError) as caught:
        call(*args)
    assert caught.value.status == status, str(caught.value)
    return str(caught.value)


def test_an_upload_is_read_within_its_limits_or_refused_with_a_4xx(detector, toy_root):
    clip = valve_clips(toy_root)[0]
    data = clip.read_bytes()
    prepared = read_upload(data, clip.name, "valve", None, detector, Limits())  # the ID from the DCASE name
    assert prepared.key == "valve/00" and len(prepared.wave) == 32000
    assert "empty" in refused(400, read_upload, b"", None, "valve", "00", detector, Limits())
    assert "unreadable" in refused(400, read_upload, b"RIFF not a wav", "x.wav", "valve", "00", detector, Limits())
    assert "bytes" in refused(413, read_upload, data, None, "valve", "00", detector, Limits(max_bytes=1000))
    assert "1.5 s" in refused(413, read_upload, data, None, "valve", "00", detector, Limits(max_seconds=1.5))
    assert "unknown machine valve/07" in refused(422, read_upload, data, None, "valve", "7", detector, Limits())
    silent = wav_bytes(np.zeros(16000, np.float32))
    assert "silent" in refused(400, read_upload, silent, None, "valve", "00", detector, Limits())
    assert refused(413, check_declared_size, "999999", Limits(max_bytes=1000))
    assert refused(400, check_declared_size, "lots", Limits())
    check_declared_size(None, Limits())  # chunked: the body itself is counted as it arrives
    assert media_type("audio/wav") == media_type("application/octet-stream") == "raw"
    assert media_type("multipart/form-data; boundary=x") == "multipart"
    assert "multipart/form-data" in refused(415, media_type, "text/plain")


def test_only_wav_is_taken_and_its_length_is_read_from_the_header_before_decoding(detector, toy_root, monkeypatch):
    """A compressed file holds hours in megabytes: 10 min of FLAC sent as audio/wav is refused from its header (415),
    and a WAV over the time limit is refused without being decoded."""
    buffer = io.BytesIO()
    sf.write(buffer, np.full(16000 * 600, 0.1, np.float32), 16000, format="FLAC")
    assert len(buffer.getvalue()) < 2**20  # 10 minutes in a few kilobytes
    assert "FLAC audio: the service takes WAV" in refused(415, read_upload, buffer.getvalue(), "bomb.wav", "valve",
                                                          "00", detector, Limits())

    def no_decoding(*args):
        raise AssertionError("decoded before its length was checked")

    monkeypatch.setattr("rcmae.serve.uploads.decode", no_decoding)
    data = valve_clips(toy_root)[0].read_bytes()
    assert "2.0 s of audio, the limit is 1.5 s" in refused(413, read_upload, data, None, "valve", "00", detector,
                                                           Limits(max_seconds=1.5))


def test_pages_of_other_sites_are_refused_unless_allowed():
    check_origin(None, "127.0.0.1:8000", ())  # curl, scripts: no Origin
    check_origin("http://127.0.0.1:8000", "127.0.0.1:8000", ())  # the service's own page
    assert "--allow-origin http://evil.example" in refused(403, check_origin, "http://evil.example",
                                                           "127.0.0.1:8000", ())
    check_origin("https://plant.example", "127.0.0.1:8000", ("https://plant.example",))
    assert origins("https://a.example/, https://b.example") == ("https://a.example", "https://b.example")


def test_the_machine_comes_from_fields_or_a_dcase_name(detector):
    machines = detector.machines  # two types, each with IDs 00, 02, 04
    assert machine_of(None, "valve", "02", machines) == ("valve", "02")
    assert machine_of("normal_id_04_00000001.wav", "valve", None, machines) == ("valve", "04")
    assert machine_of("section_02_source_test_normal_0001.wav", "valve", None, machines) == ("valve", "02")
    assert "machine_type" in refused(422, machine_of, "normal_id_04_00000001.wav", None, None, machines)
    only = [m for m in machines if m.startswith("valve/")]
    assert machine_of("normal_id_04_00000001.wav", None, None, only) == ("valve", "04")
    assert "machine_type and machine_id" in refused(422, machine_of, "recording.wav", None, None, machines)


def test_a_batch_of_recordings_scores_as_each_alone(detector, toy_root):
    waves = [sf.read(path, dtype="float32")[0] for path in valve_clips(toy_root)]
    waves[1] = np.concatenate([waves[1]] * 3)  # 6 s: five windows among one-window recordings
    prepared = [detector.prepare(wave, 16000, "valve", "00") for wave in waves]
    together = detector.score_prepared(prepared)
    for wave, result in zip(waves, together):
        alone = detector.score(wave, 16000, "valve", "00")
        # the default score is standardised (unit scale, often near 0): an absolute tolerance as well
        assert result.score == pytest.approx(alone.score, rel=1e-5, abs=1e-5)
        assert result.window_scores == pytest.approx(alone.window_scores, rel=1e-5, abs=1e-5)
        assert result.window_starts_s == alone.window_starts_s and result.decision == alone.decision
    assert len(together[1].window_scores) == 5


def test_the_api_page_documents_what_post_score_takes_and_every_refusal():
    from rcmae.serve.app import api

    score = api.openapi()["paths"]["/score"]["post"]
    assert set(score["requestBody"]["content"]) == {"audio/wav", "multipart/form-data"}
    assert {"file", "machine_type", "machine_id"} == set(
        score["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"])
    assert {"machine_type", "machine_id", "filename", "view"} == {p["name"] for p in score["parameters"]}
    assert set(score["responses"]) == {"200", "400", "401", "403", "408", "413", "415", "422"}


def test_a_token_is_read_from_its_file_and_compared_whole():
    from rcmae.serve.app import authorized

    assert authorized(f"Bearer {TOKEN}", TOKEN)
    for header in (None, TOKEN, f"bearer {TOKEN}", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN} ", f"Basic {TOKEN}"):
        assert not authorized(header, TOKEN), header


def test_a_token_file_that_cannot_serve_is_one_line(finetuned_model, tmp_path):
    from rcmae.serve.app import ServiceArgs, ServiceSettings

    short, spaced = tmp_path / "short", tmp_path / "spaced"
    short.write_text("abc\n")
    spaced.write_text("a token with spaces in it\n")
    for path, message in ((tmp_path / "missing", "cannot read the token file"), (short, "at least 16"),
                          (spaced, "one word")):
        with pytest.raises(RcmaeError, match=message):
            ServiceSettings(str(finetuned_model), token_file=str(path))
    good = tmp_path / "good"
    good.write_text(TOKEN)
    assert ServiceArgs(checkpoint=str(finetuned_model), token_file=str(good)).settings().token_file == str(good)


def test_service_settings_from_a_serve_configs_typed_arguments(finetuned_model, tmp_path):
    from pydantic import ValidationError

    from rcmae.serve.app import ServiceArgs, ServiceSettings, deployment_options, require_free

    def settings_of(args: dict) -> ServiceSettings:  # as Serve hands them to `build`: validated, then built
        return ServiceArgs.model_validate(dict(args, checkpoint=str(finetuned_model))).settings()

    settings = settings_of({"max_batch_size": "4", "max_upload_mb": "2", "max_seconds": "30",
                            "upload_timeout_s": "5", "allow_origins": "https://a.example, https://b.example/"})
    assert settings.max_batch_size == 4 and settings.limits == Limits(2 * 2**20, 30.0, 5.0)
    assert settings.allow_origins == ("https://a.example", "https://b.example")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        settings_of({"batch": "4"})
    with pytest.raises(ValidationError, match="valid integer"):
        settings_of({"max_batch_size": "many"})
    with pytest.raises(RcmaeError, match="not a fine-tuned model folder"):
        ServiceSettings(str(tmp_path))
    for name, value in (("max_upload_mb", "inf"), ("max_upload_mb", "nan"), ("max_seconds", "nan"),
                        ("batch_wait_s", "nan"), ("max_seconds", "inf"), ("upload_timeout_s", "nan"),
                        ("upload_timeout_s", "0"), ("max_batch_size", "0")):  # a limit off, a wait that stalls
        with pytest.raises((RcmaeError, ValidationError)):
            settings_of({name: value})
    on_gpus = deployment_options(settings, None, {"CPU": 16, "GPU": 2})
    assert on_gpus["ray_actor_options"]["num_gpus"] == 1 and on_gpus["autoscaling_config"]["max_replicas"] == 2
    on_cpus = deployment_options(settings, None, {"CPU": 6})
    assert on_cpus["ray_actor_options"]["num_gpus"] == 0 and on_cpus["autoscaling_config"]["max_replicas"] == 6
    assert deployment_options(settings, 3, {"CPU": 6})["num_replicas"] == 3
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(RcmaeError, match="choose another --port"):
            require_free("127.0.0.1", taken.getsockname()[1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


TOKEN = "rcmae-test-token-0123456789"  # the service's --token-file holds it


def post(url: str, data: bytes, content_type: str = "audio/wav", origin: str | None = None,
         token: str | None = TOKEN) -> tuple[int, dict]:
    headers = {"Content-Type": content_type, **({"Origin": origin} if origin else {}),
               **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refusal:
        return refusal.code, json.loads(refusal.read())


def multipart(fields: dict[str, str], file_name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "rcmae-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
                 f"Content-Type: audio/wav\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


UPLOAD_TIMEOUT_S = 3  # the service's --upload-timeout-s


@pytest.fixture(scope="module")
def service(finetuned_model, tmp_path_factory):
    """`rcmae serve` on its own local Ray, on a free loopback port, with a token, stopped by Ctrl-C (SIGINT)."""
    port = free_port()
    folder = tmp_path_factory.mktemp("serve")
    log, token_file = folder / "serve.log", folder / "token"
    token_file.write_text(TOKEN + "\n")
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "rcmae.cli", "serve", "--checkpoint", str(finetuned_model),
                                    "--port", str(port), "--replicas", "1", "--max-upload-mb", "1",
                                    "--max-seconds", "30", "--upload-timeout-s", str(UPLOAD_TIMEOUT_S),
                                    "--token-file", str(token_file)],
                                   stdout=handle, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, RAY_ADDRESS=""))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    while True:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=5) as answer:
                health = json.loads(answer.read())
            break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(f"the service did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(1)
    yield url, health, process.pid, token_file
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 0, log.read_text()[-3000:]


@pytest.mark.slow
@pytest.mark.ray
def test_the_service_answers_with_the_scores_of_rcmae_score_and_the_api(service, detector, finetuned_model,
                                                                         toy_root, tmp_path):
    url, health, _, _ = service
    assert health["status"] == "ok" and health["machines"] == detector.machines
    clips = valve_clips(toy_root)
    long = tmp_path / "long_id_00.wav"  # 6 s: windowed
    sf.write(long, np.concatenate([sf.read(clips[1], dtype="float32")[0]] * 3), 16000)
    cli = subprocess.run([sys.executable, "-m", "rcmae.cli", "score", "--checkpoint", str(finetuned_model),
                          "--machine-type", "valve", "--machine-id", "00", *map(str, clips), str(long)],
                         capture_output=True, text=True)
    expected = pd.read_csv(io.StringIO(cli.stdout)).set_index("file")
    assert cli.returncode == (EXIT.anomaly_found if expected["decision"].any() else EXIT.ok), cli.stderr
    for path in [*clips, long]:
        status, raw = post(url + "score?machine_type=valve&machine_id=00", path.read_bytes())
        body, content_type = multipart({"machine_type": "valve", "machine_id": "00"}, path.name, path.read_bytes())
        status_form, form = post(url + "score", body, content_type)
        api = detector.score_file(path, "valve", "00")
        assert status == status_form == 200, (raw, form)
        for answer in (raw, form):
            assert answer["score"] == same_score(expected.loc[str(path), "score"])
            assert int(answer["decision"]) == expected.loc[str(path), "decision"]
            assert answer["score"] == same_score(api.score)
            assert answer["window_scores"] == same_score(api.window_scores)
            assert answer["threshold"] == pytest.approx(api.threshold) and answer["machine"] == "valve/00"
    assert len(raw["window_starts_s"]) == 5  # the last answer: the 6 s recording

    # concurrent requests share batches and still get their own scores
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: post(url + "score?machine_type=valve&machine_id=00", p.read_bytes()),
                                clips * 3))
    for path, (status, answer) in zip(clips * 3, answers):
        assert status == 200 and answer["score"] == same_score(expected.loc[str(path), "score"])


@pytest.mark.slow
@pytest.mark.ray
def test_bad_uploads_get_a_4xx_with_the_reason(service, toy_root):
    url, _, _, _ = service
    clip = valve_clips(toy_root)[0].read_bytes()
    assert post(url + "score?machine_type=valve&machine_id=00", b"not audio at all")[0] == 400
    assert post(url + "score?machine_type=valve&machine_id=00", clip, "text/plain")[0] == 415
    assert post(url + "score", clip)[0] == 422  # no machine
    assert post(url + "score?machine_type=valve&machine_id=09", clip)[0] == 422
    status, answer = post(url + "score?machine_type=valve&machine_id=00", wav_bytes(np.ones(40 * 8000) * 0.1, 8000))
    assert status == 413 and "30 s" in answer["error"]  # 40 s at 8 kHz: under 1 MB, over 30 s
    status, answer = post(url + "score?machine_type=valve&machine_id=00", clip * 20)  # 1.3 MB
    assert status == 413 and "limit" in answer["error"]
    body, content_type = multipart({"machine_type": "valve"}, "x.wav", b"")
    assert post(url + "score", body.replace(b'name="file"', b'name="other"'), content_type)[0] == 400
    flac = io.BytesIO()
    sf.write(flac, np.full(16000 * 600, 0.1, np.float32), 16000, format="FLAC")
    status, answer = post(url + "score?machine_type=valve&machine_id=00", flac.getvalue())  # sent as audio/wav
    assert status == 415 and "FLAC" in answer["error"]
    body, content_type = multipart({"machine_type": "valve", "machine_id": "00"}, "x.wav", clip)
    status, answer = post(url + "score", body, content_type, origin="http://evil.example")
    assert status == 403 and "--allow-origin" in answer["error"]
    assert post(url + "score", body, content_type, origin=url.rstrip("/"))[0] == 200  # the service's own page
    page = urllib.request.urlopen(url, timeout=30).read().decode()
    assert "<title>rcmae" in page and 'id="file"' in page


@pytest.mark.slow
@pytest.mark.ray
def test_post_score_needs_the_token_and_healthz_does_not(service, toy_root):
    url, health, _, _ = service
    assert health["token_required"] is True
    clip = valve_clips(toy_root)[0].read_bytes()
    for token in (None, "wrong-token-0123456789", TOKEN + "x"):
        status, answer = post(url + "score?machine_type=valve&machine_id=00", clip, token=token)
        assert status == 401 and "Authorization: Bearer" in answer["error"], (token, answer)
    assert post(url + "score?machine_type=valve&machine_id=00", clip)[0] == 200
    unauthorized = urllib.request.Request(url + "score", data=clip, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unauthorized, timeout=60)
    assert refused.value.headers["WWW-Authenticate"] == "Bearer"
    spec = json.loads(urllib.request.urlopen(url + "openapi.json", timeout=30).read())  # the API page's source
    assert {"400", "401", "408", "413", "415", "422"} <= set(spec["paths"]["/score"]["post"]["responses"])
    assert "swagger" in urllib.request.urlopen(url + "docs", timeout=30).read().decode().lower()


def read_response(connection: socket.socket) -> tuple[bytes, bytes]:
    """(status line and headers, body) of one HTTP/1.1 answer read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(4096) or b"\r\n\r\n"  # closed early: what came is the answer
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = connection.recv(4096)
        if not chunk:
            break
        body += chunk
    return head, body


@pytest.mark.slow
@pytest.mark.ray
def test_uploads_that_never_arrive_get_408_and_hold_the_service_no_longer(service, toy_root):
    """More stalled uploads (headers sent, body never) than a replica takes requests at once: each is answered 408
    after --upload-timeout-s, and a real request sent after them is scored."""
    url, _, _, _ = service
    host, port = url.split("/")[2].split(":")
    stalled = []
    for _ in range(70):
        connection = socket.create_connection((host, int(port)), timeout=60)
        connection.sendall(b"POST /score?machine_type=valve&machine_id=00 HTTP/1.1\r\nHost: " + host.encode() +
                           b"\r\nAuthorization: Bearer " + TOKEN.encode() +
                           b"\r\nContent-Type: audio/wav\r\nContent-Length: 100000\r\n\r\nRIFF")
        stalled.append(connection)
    try:
        status, answer = post(url + "score?machine_type=valve&machine_id=00", valve_clips(toy_root)[0].read_bytes())
        assert status == 200 and answer["machine"] == "valve/00"
        for connection in stalled:
            head, body = read_response(connection)
            assert head.startswith(b"HTTP/1.1 408"), head
            assert f"did not arrive within {UPLOAD_TIMEOUT_S} s" in json.loads(body)["error"]
    finally:
        for connection in stalled:
            connection.close()


@pytest.mark.slow
@pytest.mark.ray
def test_every_listener_of_a_local_service_is_on_loopback(service):
    """Serve's proxy, the controller, the replica and its inter-deployment gRPC server (which Serve binds to every
    interface) and Ray's own servers: all on 127.0.0.1 when `rcmae serve` starts its own Ray."""
    _, _, pid, _ = service
    listeners, beyond = beyond_loopback(pid)
    assert len(listeners) >= 10 and beyond == [], f"listening beyond loopback: {beyond}"


@pytest.mark.slow
@pytest.mark.ray
def test_the_page_shows_the_score_in_a_real_browser(service, toy_root, tmp_path):
    if not (os.environ.get("CHROMIUM") or shutil.which("chromium")):
        pytest.skip("no Chromium here: apt-get install chromium (CI installs it)")
    url, _, _, token_file = service
    clip = valve_clips(toy_root)[0]
    screenshot = tmp_path / "page.png"
    shown = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_page.py"), "--url", url, "--clip",
                            str(clip), "--machine", "valve/00", "--out", str(screenshot),
                            "--token-file", str(token_file)],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    _, score, _, decision = shown.stdout.split()
    status, answer = post(url + "score?machine_type=valve&machine_id=00", clip.read_bytes())
    assert float(score) == pytest.approx(answer["score"], rel=1e-3)
    assert decision == ("ANOMALY" if answer["decision"] else "normal")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_serve_config_is_valid_and_builds_the_application(finetuned_model):
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from rcmae.serve.app import ServiceArgs, build

    raw = yaml.safe_load((ROOT / "cluster" / "serve" / "rcmae-serve.yaml").read_text())
    config = ServeDeploySchema.model_validate(raw)
    assert config.http_options.host == "127.0.0.1"  # loopback unless told otherwise
    (application,) = config.applications
    module, _, name = application.import_path.partition(":")
    assert (module, name) == ("rcmae.serve.app", "build")
    app = build(ServiceArgs.model_validate(dict(application.args, checkpoint=str(finetuned_model))))
    assert app._bound_deployment.name == application.deployments[0].name == "ScoreService"
