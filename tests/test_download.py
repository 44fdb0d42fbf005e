"""`rcmae data download` against an HTTP server on 127.0.0.1 serving small DCASE-style zips the test builds:
checksums verified, an interrupted transfer resumed, a server that is down, nothing half-unpacked."""

import hashlib
import json
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
    """Serves FILES[name] at /records/<id>/files/<name> (and at /<name>), honouring Range, and Zenodo's listing of
    LISTINGS[id] (name -> md5) at /api/records/<id>; `cut_once` sends only the first half of the next full response
    (the connection drops mid-transfer)."""

    def __init__(self, files, listings=None):
        self.files, self.listings, self.ranges, self.cut_once = files, listings or {}, [], False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.split("?")[0].rsplit("/", 1)[-1]
                if self.path.startswith("/api/records/") and name in owner.listings:
                    owner.files[f"record-{name}"] = json.dumps({"files": [
                        {"key": key, "checksum": f"md5:{md5}"} for key, md5 in owner.listings[name].items()]}).encode()
                    name = f"record-{name}"
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
    toy = DataSet("toy", md5=md5, parts={"dev": Part("1", "dev_data_{type}.zip", "dev_data", ("fan",)),
                                         "additional": Part("2", "eval_data_train_{type}.zip", "eval_data", ("fan",)),
                                         "eval": Part("3", "eval_data_test_{type}.zip", "eval_data", ("fan",))})
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
    toy = DataSet("toy", md5={"dev_data_fan.zip": hashlib.md5(bad).hexdigest()},
                  parts={"dev": Part("1", "dev_data_{type}.zip", "dev_data", ("fan",))})
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
    toy = DataSet("toy", md5={name: hashlib.md5(data).hexdigest() for name, data in files.items()},
                  parts={"dev": Part("1", "dev_data_{type}.zip", "dev_data", ("fan", "pump"))})
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


def year_archives(folder):
    """A DCASE 2025-shaped year under the real entry's archive names: a dev type with a supplemental folder, an
    evaluation type whose train and (unlabelled) test clips come in two archives."""
    folder.mkdir()
    dev = build_zip(folder / "dev_fan.zip", "fan", [
        "train/section_00_source_train_normal_0000_a_1.wav", "test/section_00_source_test_anomaly_0000_a_1.wav",
        "test/section_00_target_test_normal_0000_a_2.wav", "supplemental/section_00_supplemental_noise_0000.wav"])
    train = build_zip(folder / "eval_data_Polisher_train.zip", "Polisher",
                      ["train/section_00_source_train_normal_0000_b_1.wav"])
    test = build_zip(folder / "eval_data_Polisher_test.zip", "Polisher",
                     ["test/section_00_0000.wav", "test/section_00_0001.wav"])
    labels = ("Polisher\nsection_00_0000.wav,section_00_source_test_anomaly_0007_b_1.wav\n"
              "section_00_0001.wav,section_00_target_test_normal_0003_b_2.wav\n"
              "ToyPet\nsection_00_0000.wav,section_00_source_test_normal_0000_c_1.wav\n")
    files = {path.name: path.read_bytes() for path in folder.iterdir()}
    files["eval_data_list_2025.csv"] = labels.encode()
    listings = {"15097779": {"dev_fan.zip": dev}, "15392814": {"eval_data_Polisher_train.zip": train},
                "15519362": {"eval_data_Polisher_test.zip": test}}
    return files, listings


def test_a_later_year_lands_with_zenodo_s_md5_its_supplemental_clips_kept_and_eval_labels_applied(tmp_path, capsys):
    files, listings = year_archives(tmp_path / "zips")
    server = Server(files, listings)
    out = tmp_path / "data"
    argv = ["data", "download", "dcase2025", "--out", str(out), "--types", "fan,Polisher", "--no-progress",
            "--base-url", server.url, "--labels-url", f"{server.url}/eval_data_list_2025.csv"]
    try:
        assert main(argv) == 0
        assert main(argv) == 0  # a re-run finds every archive done and every listed clip renamed
    finally:
        server.close()
    assert (out / "dev_data" / "fan" / "supplemental" / "section_00_supplemental_noise_0000.wav").exists()
    rows = {r["file_name"]: r for r in index_clips(out).table.to_pylist()}  # supplemental/ kept, not indexed
    assert sorted(rows) == [f"section_00_{name}.wav" for name in (
        "source_test_anomaly_0000_a_1", "source_test_anomaly_0007_b_1", "source_train_normal_0000_a_1",
        "source_train_normal_0000_b_1", "target_test_normal_0000_a_2", "target_test_normal_0003_b_2")]
    eval_test = {(r["label"], r["domain"], r["attributes"]) for r in rows.values()
                 if r["machine_type"] == "Polisher" and r["split"] == "test"}
    assert eval_test == {("anomaly", "source", "b_1"), ("normal", "target", "b_2")}
    assert (out / "eval_data" / "eval_data_list.csv").read_text().startswith("Polisher\n")  # to map names back


def test_a_year_s_part_offers_only_its_own_machine_types_and_the_listing_must_name_the_archive(tmp_path):
    files, listings = year_archives(tmp_path / "zips")
    from rcmae.data.download import DATASETS

    with pytest.raises(DownloadError, match=r"machine types \['Polisher'\].*dev: bearing, fan"):
        DATASETS["dcase2025"].archives(("dev",), ("Polisher",))
    assert [name for name, _ in DATASETS["dcase2024"].archives(("additional",), ("RoboticArm", "Scanner"))] == [
        "eval_data_RoboticArm_train_r2.zip", "eval_data_Scanner_train.zip"]  # the re-issued archive's name
    listings["15097779"] = {"dev_gearbox.zip": "0" * 32}
    server = Server(files, listings)
    try:
        with pytest.raises(DownloadError, match="record 15097779 lists no dev_fan.zip .it has dev_gearbox.zip"):
            download(DATASETS["dcase2025"], tmp_path / "data", ("dev",), ("fan",), base_url=server.url,
                     progress=False)
    finally:
        server.close()


def test_data_list_names_every_year_and_its_parts(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for year in range(2020, 2026):
        assert f"dcase{year}: DCASE {year} Task 2" in out
    assert "zenodo.org/records/7830345 -> eval_data/: bandsaw, grinder" in out


YEAR_SHAPES = {  # a dev archive of each year, as its archives lay the clips out
    "dcase2021": ("fan", ["train/section_00_source_train_normal_0000.wav",
                          "source_test/section_00_source_test_normal_0000.wav",
                          "target_test/section_00_target_test_anomaly_0000.wav"]),
    "dcase2022": ("bearing", ["train/section_00_source_train_normal_0000_vel_6_loc_A.wav",
                              "test/section_00_target_test_anomaly_0000_vel_8_loc_B.wav"]),
    "dcase2023": ("valve", ["train/section_00_source_train_normal_0000_pat_00_panel_open.wav",
                            "test/section_00_source_test_anomaly_0000_pat_00_panel_open.wav"]),
    "dcase2024": ("gearbox", ["train/section_00_target_train_normal_0000_volt_1.0_wt_30.wav",
                              "test/section_00_source_test_normal_0000_volt_1.3_wt_30.wav"]),
    "dcase2025": ("slider", ["train/section_00_source_train_normal_0000_vel_300_ac_0.08.wav",
                             "test/section_00_target_test_normal_0000_vel_900_ac_0.08.wav",
                             "supplemental/section_00_supplemental_noise_0000.wav"]),
}


@pytest.mark.parametrize("year", sorted(YEAR_SHAPES))
def test_each_year_s_dev_archive_lands_every_split_folder_it_holds(year, tmp_path):
    from rcmae.data.download import DATASETS

    machine_type, members = YEAR_SHAPES[year]
    dev = DATASETS[year].parts["dev"]
    name = dev.archive(machine_type)
    (tmp_path / "zips").mkdir()
    md5 = build_zip(tmp_path / "zips" / name, machine_type, members)
    server = Server({name: (tmp_path / "zips" / name).read_bytes()}, {dev.record: {name: md5}})
    try:
        assert main(["data", "download", year, "--out", str(tmp_path / "data"), "--sets", "dev", "--types",
                     machine_type, "--no-progress", "--base-url", server.url]) == 0
    finally:
        server.close()
    landed = tmp_path / "data" / "dev_data" / machine_type
    assert sorted(p.relative_to(landed).as_posix() for p in landed.rglob("*.wav")) == sorted(members)
    indexed = [m for m in members if not m.startswith("supplemental/")]
    assert len(index_clips(tmp_path / "data")) == len(indexed)


@pytest.mark.slow
def test_an_evaluation_set_with_published_labels_gets_its_metrics(finetuned_model, toy_root, ray_session, tmp_path,
                                                                   capsys):
    """The toy factory's valve test clips stand in for an evaluation set: published under unlabelled 2020 names,
    evaluated (scored, no metrics), then labelled from a list in the 2020 evaluator's format and evaluated again."""
    from rcmae.data.download import EvalLabels, label_eval_clips

    tests = sorted((toy_root / "dev_data" / "valve" / "test").glob("*.wav"))
    folder = tmp_path / "data" / "eval_data" / "valve" / "test"
    folder.mkdir(parents=True)
    lines = ["valve"]
    for number, clip in enumerate(tests):
        unlabelled = f"id_{clip.stem.split('_id_')[1][:2]}_{number:08d}.wav"
        (folder / unlabelled).write_bytes(clip.read_bytes())
        lines.append(f"{unlabelled},{clip.name},{int(clip.name.startswith('anomaly'))}")
    argv = ["evaluate", "--checkpoint", str(finetuned_model), "--data", str(tmp_path / "data")]
    assert main(argv + ["--out", str(tmp_path / "before")]) == 0
    assert len(list((tmp_path / "before").glob("anomaly_score_valve_id_*.csv"))) == 3  # scored, unlabelled
    assert "no labelled test clips" in capsys.readouterr().out
    server = Server({"eval_data_list_2020.csv": "\n".join(lines).encode()})
    try:
        label_eval_clips(EvalLabels(f"{server.url}/eval_data_list_2020.csv"), tmp_path / "data", ("valve",))
    finally:
        server.close()
    assert sorted(p.name for p in folder.iterdir()) == sorted(c.name for c in tests)
    assert main(argv + ["--out", str(tmp_path / "after")]) == 0
    metrics = json.loads((tmp_path / "after" / "metrics.json").read_text())
    dev = tmp_path / "dev"
    assert main(["evaluate", "--checkpoint", str(finetuned_model), "--data", str(toy_root / "dev_data" / "valve"),
                 "--out", str(dev)]) == 0
    expected = json.loads((dev / "metrics.json").read_text())["per_type"]["valve"]
    assert metrics["per_type"]["valve"] == pytest.approx(expected)
