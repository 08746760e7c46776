"""The node's decoded-data cache (datasets/cache.py): same training with and without it, safe when two
processes build one entry at once, rebuilt when a source file changes or a cache file is damaged."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from irstdlab.datasets.build import AugmentConfig, DataConfig, build_datasets
from irstdlab.datasets.cache import CachedSplit
from irstdlab.harness.config import load_config
from irstdlab.harness.errors import ConfigError
from irstdlab.harness.reporting import LocalReporter, format_progress
from irstdlab.harness.trial import resolve_num_workers, run_trial
from irstdlab.harness.trial_metrics import is_reported

from data_cache_builder import entry_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py
TIMING = ("train/time_s", "train/time_data_s", "train/time_step_s", "images_per_s")
# data.cache is an execution setting, but like data.num_workers it is part of the config and its hash
UNCOMPARED = (*TIMING, "config_hash")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    """A small on-disk set in the DenseSIRST layout (sky maps included)."""
    from irstdlab.datasets.synthetic import write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, num_images=10, size=128, seed=1)
    return root


def entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if p.is_dir())


def snapshot(split: CachedSplit) -> list[tuple]:
    return [(s.id, s.image.tobytes(), s.boxes.tobytes(), s.sky.tobytes(), s.meta["scale"]) for s in split]


# ------------------------------------------------------------------------------ same training
def test_a_trial_trains_bitwise_identically_with_and_without_the_cache(densesirst_root, tmp_path):
    """Reference protocol, BAG-CP (reference recipe: its source comes from the cache too), flips."""
    base = ["data.dataset=densesirst", f"data.root={densesirst_root}", "data.protocol=reference",
            "data.selection=reference", "data.size=128", "data.batch_size=2", "data.eval_batch_size=8",
            "augment.bagcp=reference", "train.max_iters_per_epoch=3", "schedule.epochs=2",
            f"data.cache_dir={tmp_path / 'cache'}"]
    runs = {}
    for cache in (True, False):
        torch.set_num_threads(1)
        reporter = LocalReporter(tmp_path / f"run_{cache}")
        final = run_trial(load_config("quickstart", base + [f"data.cache={str(cache).lower()}"]), reporter)
        weights = torch.load(reporter.last_checkpoint / "checkpoint.pt", weights_only=True)["model"]
        runs[cache] = [{k: v for k, v in m.items() if k not in UNCOMPARED and not k.startswith("time/")} for m in reporter.history], final, weights
    assert len(entries(tmp_path / "cache")) == 2  # trainval_v2 and test_v2 (val = test under "reference")
    (hist_on, final_on, w_on), (hist_off, final_off, w_off) = runs[True], runs[False]
    assert hist_on == hist_off  # losses, lr, val metrics of every epoch, to the last bit
    assert final_on["test/mAP07"] == final_off["test/mAP07"]
    assert w_on.keys() == w_off.keys() and all(torch.equal(w_on[k], w_off[k]) for k in w_on)


def test_cached_samples_match_decoded_ones_for_keep_ratio_originals_and_paper_bagcp(densesirst_root, tmp_path):
    data = DataConfig(dataset="densesirst", root=str(densesirst_root), protocol="clean", scale=(320, 192),
                      cache_dir=str(tmp_path))
    for augment in (AugmentConfig(bagcp="paper"), AugmentConfig(hflip=0.0)):
        on = build_datasets(data, augment, seed=5, keep_original=True)
        off = build_datasets(DataConfig(**{**data.__dict__, "cache": False}), augment, seed=5, keep_original=True)
        for role in ("train", "test"):
            on[role].set_epoch(1), off[role].set_epoch(1)
            for i in range(0, len(on[role]), 5):
                a, b = on[role][i], off[role][i]
                assert a.id == b.id and np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
                assert np.array_equal(a.sky, b.sky) and a.meta.keys() == b.meta.keys()
                for key in a.meta:
                    assert np.array_equal(a.meta[key], b.meta[key]) if isinstance(a.meta[key], np.ndarray) \
                        else a.meta[key] == b.meta[key], key


# ------------------------------------------------------------------------------ two builders
# A builder process that imports only the data side (no torch): both start, wait for the go file,
# then build the same entry at the same moment.
BUILDER = """
import hashlib, json, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from data_cache_builder import entry_for
root, cache, lock, go = sys.argv[1], sys.argv[2], sys.argv[3] == "1", Path(sys.argv[4])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.002)
split = entry_for(Path(root), Path(cache), lock=lock, log=lambda line: print(line, file=sys.stderr))
print(json.dumps([str(split.folder), hashlib.sha256(b"".join(s.image.tobytes() for s in split)).hexdigest()]))
"""


@pytest.mark.parametrize("lock", [True, False], ids=["waits-on-lock", "loser-discards"])
def test_two_processes_building_one_entry_end_with_one_good_entry(synth_root, tmp_path, lock):
    import hashlib
    import json
    import subprocess
    import sys

    go = tmp_path / "go"
    code = BUILDER.format(tests=str(Path(__file__).parent))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(synth_root), str(tmp_path / "cache"),
                               "1" if lock else "0", str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    go.touch()
    results, builds = [], 0
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
        builds += err.count("data cache: built")
    if lock:
        assert builds == 1  # the second process waited for the first one's entry
    assert results[0] == results[1]  # same folder, same pixels
    assert [p.name for p in entries(tmp_path / "cache")] == [Path(results[0][0]).name]  # no temp or trash left
    fresh = entry_for(synth_root, tmp_path / "other")
    assert hashlib.sha256(b"".join(s.image.tobytes() for s in fresh)).hexdigest() == results[0][1]


def test_a_builder_that_loses_the_rename_discards_its_copy(synth_root, tmp_path):
    """Deterministic race: while this builder decodes, a second one (no lock) finishes first."""
    from irstdlab.datasets.cache import CacheKey, open_cached, source_files
    from irstdlab.datasets.readers import open_dataset

    reader = open_dataset("synthetic", synth_root, split="train_v2", protocol="reference", load_masks=False)
    key = CacheKey("synthetic", str(synth_root), "train_v2", "reference", 64)
    winner: list = []

    def samples():
        for i, sample in enumerate(reader):
            if i == 1:  # mid-build: the other builder renames its entry into place
                winner.append(entry_for(synth_root, tmp_path, lock=False))
            out = sample.copy()
            out.meta["orig_boxes"] = sample.boxes
            yield out

    lines: list[str] = []
    loser = open_cached(key, source_files(reader), samples, estimate_bytes=10**6, cache_dir=str(tmp_path),
                        lock=False, log=lines.append)
    assert loser.folder == winner[0].folder and not any("built" in line for line in lines)
    assert entries(tmp_path) == [loser.folder]  # the loser's temp folder is gone
    assert snapshot(loser) == snapshot(winner[0])  # and it reads the winner's pixels (64 px, resized)


# ------------------------------------------------------------------------------ invalidation, corruption
def test_a_changed_source_file_rebuilds_the_entry(synth_root, tmp_path):
    root = tmp_path / "data"
    import shutil

    shutil.copytree(synth_root, root)
    first = entry_for(root, tmp_path / "cache")
    assert entry_for(root, tmp_path / "cache").folder == first.folder  # unchanged files: a hit
    ident = first.ids[0]
    xml = root / "SIRST" / "BBox" / f"{ident}.xml"
    text = xml.read_text()
    assert "<xmin>" in text
    # widen the first box by one pixel: same kind of edit a user's re-annotation makes
    xmax = text.split("<xmax>")[1].split("</xmax>")[0]
    xml.write_text(text.replace(f"<xmax>{xmax}</xmax>", f"<xmax>{int(float(xmax)) + 1}</xmax>", 1))
    second = entry_for(root, tmp_path / "cache")
    assert second.folder != first.folder
    assert second[0].boxes[0, 2] > first[0].boxes[0, 2]
    assert entries(tmp_path / "cache") == [second.folder]  # the stale entry is pruned
    os.utime(root / "PNGImages" / f"{ident}.png", ns=(1, 1))  # a touch alone (mtime) also invalidates
    assert entry_for(root, tmp_path / "cache").folder != second.folder


@pytest.mark.parametrize("damage", ["truncated-pixels", "garbage-manifest", "index-bytes"])
def test_a_damaged_entry_is_detected_and_rebuilt(synth_root, tmp_path, damage):
    good = snapshot(entry_for(synth_root, tmp_path))
    folder = entries(tmp_path)[0]
    if damage == "truncated-pixels":
        with open(folder / "image.u8", "r+b") as f:
            f.truncate(100)
    elif damage == "garbage-manifest":
        (folder / "manifest.json").write_text("{not json")
    else:
        data = bytearray((folder / "index.npz").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / "index.npz").write_bytes(bytes(data))
    lines: list[str] = []
    rebuilt = entry_for(synth_root, tmp_path, log=lines.append)
    assert any("corrupt" in line and "rebuilding" in line for line in lines)
    assert snapshot(rebuilt) == good


def test_an_unusable_cache_folder_falls_back_to_reading_the_files(synth_root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    lines: list[str] = []
    assert entry_for(synth_root, blocker / "cache", log=lines.append) is None
    assert lines and "reading the files directly" in lines[0]
    data = DataConfig(dataset="synthetic", root=str(synth_root), size=64, cache_dir=str(blocker / "cache"))
    sets = build_datasets(data, AugmentConfig(), seed=0)  # the trial goes on, uncached
    assert sets["train"][0].image.shape == (64, 64)


# ------------------------------------------------------------------------------ config, workers, report
def test_data_config_fields_are_validated():
    assert load_config("quickstart").data.num_workers == "auto"
    assert load_config("quickstart", ["data.num_workers=2"]).data.num_workers == 2
    for bad, field in (("data.num_workers=many", "data.num_workers"), ("data.num_workers=-1", "data.num_workers"),
                       ("data.cache=maybe", "data.cache"), ("data.cache_dir=''", "data.cache_dir")):
        with pytest.raises(ConfigError, match=field):
            load_config("quickstart", [bad])


def test_auto_loader_workers_follow_the_device():
    assert resolve_num_workers("auto", torch.device("cpu"), cpus=2) == 0
    assert resolve_num_workers("auto", torch.device("cuda"), cpus=2) == 1
    assert resolve_num_workers("auto", torch.device("cuda"), cpus=16) == 4
    assert resolve_num_workers(2, torch.device("cpu"), cpus=2) == 2  # the paper presets' explicit 2


def test_every_epoch_reports_the_data_and_step_time(tmp_path):
    torch.set_num_threads(1)
    cfg = load_config("quickstart", ["data.synthetic_images=[4, 2, 2]", "data.batch_size=2",
                                     "train.max_iters_per_epoch=2", "schedule.epochs=1"])
    reporter = LocalReporter(tmp_path)
    run_trial(cfg, reporter)
    (metrics,) = reporter.history
    assert metrics["loader_workers"] == 0  # CPU trial, auto
    assert 0 < metrics["train/time_data_s"] and 0 < metrics["train/time_step_s"]
    assert metrics["train/time_data_s"] + metrics["train/time_step_s"] <= metrics["train/time_s"]
    assert all(is_reported(k) for k in ("train/time_data_s", "train/time_step_s", "loader_workers"))
    assert "% waiting)" in format_progress(metrics)
