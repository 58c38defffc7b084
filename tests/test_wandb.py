"""The real wandb library through the documented switch, ``logger.wandb.offline=true``: the offline run file holds the
values the CSV log holds, nothing leaves the machine, no model artifact is recorded, a resumed run continues the same W&B
run, and every logger option builds.

wandb 0.31 ships no Python reader of its ``.wandb`` run files (``wandb.sdk.internal.datastore`` went into its Go core), so
``read_records`` decodes the framing here (a 7-byte wandb header, then LevelDB's log format) and the records with wandb's
own protobuf ``Record``.
"""

import csv
import json
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import wandb
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig
from wandb.proto.wandb_internal_pb2 import Record

from dnagpt.loggers import ResumableCSVLogger
from dnagpt.pipeline import instantiate_loggers, train

FILE_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)  # identity, magic, version 0
BLOCK, CHUNK_HEADER = 32768, 7  # LevelDB log: 32 KiB blocks of chunks (crc32, length, type) that never cross a block
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[Record]:
    """Every record of a ``.wandb`` file, each chunk's CRC checked: a misread fails here, not as a wrong value later."""
    data = path.read_bytes()
    assert data.startswith(FILE_HEADER), data[:7]
    records, parts, pos = [], [], len(FILE_HEADER)
    while pos + CHUNK_HEADER <= len(data):
        if BLOCK - pos % BLOCK < CHUNK_HEADER:  # a block's tail too short for a chunk header is padding
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        chunk = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        assert kind in (FULL, FIRST, MIDDLE, LAST) and zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, (path, pos)
        parts.append(chunk)
        if kind in (FULL, LAST):
            records.append(Record.FromString(b"".join(parts)))
            parts = []
    assert not parts, f"{path}: ends inside a record"
    return records


def train_to_exit(cfg: DictConfig) -> None:
    """``train``, then what the end of the training process does: wandb's exit hook waits until the run files are
    written (``wandb.finish`` alone returns before an offline run's file is complete)."""
    train(cfg)
    wandb.teardown()


def run_files(root: Path) -> list[Path]:
    return sorted(root.rglob("run-*.wandb"))


def wandb_history(files: list[Path], key: str) -> dict[int, float]:
    """``key`` by Lightning's global step over the run files in order (a resumed step replaces the earlier value)."""
    values = {}
    for path in files:
        for record in read_records(path):
            if record.HasField("history"):
                row = {item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                if key in row:
                    values[int(row["trainer/global_step"])] = row[key]
    return values


def csv_history(path: Path, key: str) -> dict[int, float]:
    with path.open(newline="") as fh:
        return {int(float(row["step"])): float(row[key]) for row in csv.DictReader(fh) if row[key] != ""}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[socket.socket]:
    """W&B pointed at a local port that listens and never answers: any attempt to reach the server queues a connection
    there (and an online run fails at init instead of uploading). Offline mode comes from the config, not WANDB_MODE;
    wandb's own files (settings, artifact staging, cache) stay under tmp_path."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "20")
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        yield server


def assert_never_contacted(server: socket.socket) -> None:
    with pytest.raises(BlockingIOError):  # nothing in the accept queue
        server.accept()


OFFLINE = ["logger=many", "logger.wandb.offline=true", "test=false"]


@pytest.mark.slow
def test_offline_run_holds_the_csv_values_uploads_nothing_and_resumes_the_same_run(
    make_cfg, no_network: socket.socket, tmp_path: Path
) -> None:
    train_to_exit(make_cfg("train", [*OFFLINE, "trainer.max_steps=2"]))
    (first,) = run_files(tmp_path)
    assert first.parent.name.startswith("offline-run-")  # what `wandb sync` looks for
    records = read_records(first)
    assert not [r for r in records if r.HasField("artifact")]  # offline: no model artifact for `wandb sync` to carry
    (run_id,) = {r.run.run_id for r in records if r.HasField("run")}
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["dnagpt"]["wandb_run_id"] == run_id

    train_to_exit(make_cfg("train", [*OFFLINE, "trainer.max_steps=4", "ckpt_path=auto"]))
    files = run_files(tmp_path)
    assert len(files) == 2, files  # offline, each process writes its own run directory ...
    assert {f.stem.removeprefix("run-") for f in files} == {run_id}  # ... under the same W&B run id

    metrics_csv = tmp_path / "csv" / "metrics.csv"
    for key, steps in (("train/loss", {0, 1, 2, 3}), ("val/loss", {1, 3})):  # validation every 2 steps
        logged = wandb_history(files, key)
        assert set(logged) == steps, (key, logged)
        assert logged == csv_history(metrics_csv, key), key
    assert_never_contacted(no_network)


@pytest.mark.slow
def test_online_config_logs_the_final_checkpoint_as_a_model_artifact(
    make_cfg, no_network: socket.socket, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The upload itself needs the W&B server (and an API key), which tests never reach. wandb's own offline mode stands
    # in for the network: it records in the run file the artifact an online run sends, from the unchanged online config.
    monkeypatch.setenv("WANDB_MODE", "offline")
    train_to_exit(make_cfg("train", ["logger=many", "test=false", "trainer.max_steps=2"]))
    (path,) = run_files(tmp_path)
    artifacts = [r.artifact for r in read_records(path) if r.HasField("artifact")]
    assert artifacts, "no model artifact recorded"
    run_id = path.stem.removeprefix("run-")
    for artifact in artifacts:  # the best checkpoint, then last.ckpt (Lightning's log_model=True, at the end of fit)
        assert (artifact.type, artifact.name) == ("model", f"model-{run_id}")
        assert [c.path for c in artifact.manifest.contents] == ["model.ckpt"]
    assert_never_contacted(no_network)


@pytest.mark.parametrize(
    ("overrides", "built", "log_model"),
    [
        (["logger=csv"], [ResumableCSVLogger], None),
        (["logger=wandb"], [WandbLogger], True),
        (["logger=wandb", "logger.wandb.offline=true"], [WandbLogger], False),
        (["logger=many"], [ResumableCSVLogger, WandbLogger], True),
        (["logger=many", "logger.wandb.offline=true"], [ResumableCSVLogger, WandbLogger], False),
    ],
)
def test_every_logger_option_builds(
    make_cfg, no_network: socket.socket, overrides: list[str], built: list[type], log_model: bool | None
) -> None:
    """Built as the pipeline builds them, so an option Lightning refuses (log_model with offline) fails here."""
    cfg = make_cfg("train", overrides)
    loggers = instantiate_loggers(cfg.logger)
    assert [type(lg) for lg in loggers] == built
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            assert cfg.logger.wandb.log_model is log_model  # online: the config asks for the checkpoint ...
            assert lg._log_model is log_model  # ... and the logger Lightning uses keeps it (no public accessor)
    assert_never_contacted(no_network)  # building a logger does not start a W&B run


def test_offline_logger_says_what_sync_carries(make_cfg, no_network, caplog) -> None:
    with caplog.at_level("INFO", logger="dnagpt.pipeline"):
        instantiate_loggers(make_cfg("train", ["logger=many", "logger.wandb.offline=true"]).logger)
    assert "not the model checkpoints" in caplog.text
