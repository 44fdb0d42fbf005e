"""`rcmae data download` against an HTTP server on 127.0.0.1 serving small DCASE-style zips the test builds:
checksums verified, an interrupted transfer resumed, a server that is down, nothing half-unpacked."""

import hashlib
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf

from rcmae.cli import main
from rcmae.data.download import DataSet, DownloadError, Part, download
from rcmae.data.layout import index_clips


def build_zip(path, machine_type, members):
    with zipfile.ZipFile(path, "w") as zipped:
        for name in members:
            wave = np.random.default_rng(len(name)).normal(0, 0.1, 1600).astype(np.float32)
            scratch = path.parent / "clip.wav"
            sf.write(scratch, wave, 16000)
            zipped.write(scratch, f"{machine_type}/{name}")
    return hashlib.md5(path.read_bytes()).hexdigest()


class Server:
    """Serves FILES[name] at /records/<id>/files/<name>, honouring Range; `cut_once` sends only the first half
    of the next full response (the connection drops mid-transfer)."""

    def __init__(self, files):
        self.files, self.ranges, self.cut_once = files, [], False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.split("?")[0].rsplit("/", 1)[-1]
                if name not in owner.files:
                    self.send_error(404)
                    return
                data = owner.files[name]
                start = 0
                if "Range" in self.headers:
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    owner.ranges.append(start)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if owner.cut_once and start == 0:
                    owner.cut_once = False
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archives(tmp_path):
    folder = tmp_path / "zips"
    folder.mkdir()
    dev = ["train/normal_id_00_00000000.wav", "train/normal_id_00_00000001.wav",
           "test/normal_id_00_00000000.wav", "test/anomaly_id_00_00000000.wav"]
    md5 = {"dev_data_fan.zip": build_zip(folder / "dev_data_fan.zip", "fan", dev),
           "eval_data_train_fan.zip": build_zip(folder / "eval_data_train_fan.zip", "fan",
                                                ["train/normal_id_01_00000000.wav"]),
           "eval_data_test_fan.zip": build_zip(folder / "eval_data_test_fan.zip", "fan",
                                               ["test/id_01_00000000.wav", "test/id_01_00000001.wav"])}
    files = {name: (folder / name).read_bytes() for name in md5}
    toy = DataSet(types=("fan",), md5=md5, parts={"dev": Part("1", "dev_data_{type}.zip", "dev_data"),
                                                  "additional": Part("2", "eval_data_train_{type}.zip", "eval_data"),
                                                  "eval": Part("3", "eval_data_test_{type}.zip", "eval_data")})
    server = Server(files)
    yield toy, server
    server.close()


def test_all_three_parts_land_in_the_layout_rcmae_reads(archives, tmp_path):
    toy, server = archives
    download(toy, tmp_path / "data", ("dev", "additional", "eval"), ("fan",), base_url=server.url, progress=False)
    rows = index_clips(tmp_path / "data").table.to_pylist()
    assert len(rows) == 7
    assert {(r["path"].split("/data/")[1].split("/")[0], r["split"], r["label"]) for r in rows} == {
        ("dev_data", "train", "normal"), ("dev_data", "test", "normal"), ("dev_data", "test", "anomaly"),
        ("eval_data", "train", "normal"), ("eval_data", "test", "unknown")}
    assert not list((tmp_path / "data" / ".downloads").glob("*.zip"))  # archives removed once unpacked
    download(toy, tmp_path / "data", ("dev",), ("fan",), base_url=server.url, progress=False)  # done: no fetch
    assert len(index_clips(tmp_path / "data").table) == 7


def test_an_interrupted_transfer_is_an_error_and_the_rerun_resumes_it(archives, tmp_path):
    toy, server = archives
    server.cut_once = True
    with pytest.raises(DownloadError, match="interrupted.*re-run to resume"):
        download(toy, tmp_path / "data", ("dev",), ("fan",), base_url=server.url, progress=False)
    partial = tmp_path / "data" / ".downloads" / "dev_data_fan.zip.part"
    assert 0 < partial.stat().st_size < len(server.files["dev_data_fan.zip"])
    assert not (tmp_path / "data" / "dev_data").exists()  # nothing unpacked from half a file
    download(toy, tmp_path / "data", ("dev",), ("fan",), base_url=server.url, progress=False)
    assert server.ranges == [len(server.files["dev_data_fan.zip"]) // 2]  # asked only for the rest
    assert len(index_clips(tmp_path / "data").table) == 4


def test_a_checksum_mismatch_names_both_sums_and_leaves_nothing(archives, tmp_path):
    toy, server = archives
    server.files["dev_data_fan.zip"] = server.files["dev_data_fan.zip"][:-10] + b"0123456789"
    expected = toy.md5["dev_data_fan.zip"]
    with pytest.raises(DownloadError, match=f"dev_data_fan.zip: checksum mismatch .*expected {expected}"):
        download(toy, tmp_path / "data", ("dev",), ("fan",), base_url=server.url, progress=False)
    assert not (tmp_path / "data" / "dev_data").exists()
    assert not list((tmp_path / "data" / ".downloads").iterdir())


def test_the_cli_checks_the_real_table_and_reports_a_server_that_is_down(archives, tmp_path, capsys):
    _, server = archives  # serves toy zips under the real names: the real md5 table must refuse them
    argv = ["data", "download", "dcase2020", "--out", str(tmp_path / "data"), "--sets", "dev", "--types", "fan",
            "--no-progress"]
    assert main(argv + ["--base-url", server.url]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    url = server.url
    server.close()
    assert main(argv + ["--base-url", url]) == 2
    err = capsys.readouterr().err
    assert "cannot reach" in err and "Traceback" not in err
    assert not (tmp_path / "data" / "dev_data").exists()
    assert main(argv[:-1] + ["--types", "drill", "--base-url", url]) == 2
    assert "machine types ['drill']" in capsys.readouterr().err


def test_a_damaged_zip_with_the_right_sum_is_refused_without_unpacking(tmp_path):
    bad = b"not a zip at all"
    toy = DataSet(types=("fan",), md5={"dev_data_fan.zip": hashlib.md5(bad).hexdigest()},
                  parts={"dev": Part("1", "dev_data_{type}.zip", "dev_data")})
    server = Server({"dev_data_fan.zip": bad})
    try:
        with pytest.raises(DownloadError, match="not a readable zip"):
            download(toy, tmp_path / "data", ("dev",), ("fan",), base_url=server.url, progress=False)
    finally:
        server.close()
    assert not (tmp_path / "data" / "dev_data").exists()


def test_every_split_folder_an_archive_holds_lands_and_one_rcmae_cannot_read_is_an_error(tmp_path):
    names = ("section_00_source_train_normal_0000_a.wav", "section_00_source_test_normal_0000_a.wav",
             "section_00_target_test_anomaly_0000_a.wav")
    sectioned = tmp_path / "dev_data_fan.zip"
    build_zip(sectioned, "fan", [f"train/{names[0]}", f"source_test/{names[1]}", f"target_test/{names[2]}"])
    odd = tmp_path / "dev_data_pump.zip"
    build_zip(odd, "pump", [f"train/{names[0]}", f"extra/{names[1]}"])
    files = {path.name: path.read_bytes() for path in (sectioned, odd)}
    toy = DataSet(types=("fan", "pump"), md5={name: hashlib.md5(data).hexdigest() for name, data in files.items()},
                  parts={"dev": Part("1", "dev_data_{type}.zip", "dev_data")})
    server = Server(files)
    try:
        download(toy, tmp_path / "data", ("dev",), ("fan",), base_url=server.url, progress=False)
        with pytest.raises(DownloadError, match=r"holds audio in pump/extra, which is no split folder"):
            download(toy, tmp_path / "data", ("dev",), ("pump",), base_url=server.url, progress=False)
    finally:
        server.close()
    fan = tmp_path / "data" / "dev_data" / "fan"
    assert sorted(p.relative_to(fan).as_posix() for p in fan.rglob("*.wav")) == [
        f"source_test/{names[1]}", f"target_test/{names[2]}", f"train/{names[0]}"]
    assert not (tmp_path / "data" / "dev_data" / "pump").exists()
    assert not (tmp_path / "data" / ".downloads" / "dev_data_pump.zip.done").exists()  # never "done"
    assert len(index_clips(tmp_path / "data" / "dev_data")) == 3  # as `rcmae index` reads them
