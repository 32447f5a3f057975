"""What ``evaluate`` and ``prsl attack`` share: the split of batches between the processes of a
launch, their shard files, and the output folder's settings record and ``--overwrite``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from prsl.core.errors import RunConflict
from prsl.evaluate.folder import OutputFolder
from prsl.evaluate.shards import ShardFiles, assigned_batches, read_predictions
from prsl.provenance import SETTINGS, read_settings


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_batch_goes_to_exactly_one_process_in_turn(world):
    items = list(range(10))
    per_rank = [list(assigned_batches(items, 3, rank, world)) for rank in range(world)]
    batches = [[batch for batch, _ in seen] for seen in per_rank]
    assert all(b == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]] for b in batches)  # all see all
    taken = [[i for i, (_, mine) in enumerate(seen) if mine] for seen in per_rank]
    assert sorted(sum(taken, [])) == [0, 1, 2, 3]
    assert all(index % world == rank for rank, mine in enumerate(taken) for index in mine)


def test_shard_files_are_read_the_first_processs_first(tmp_path):
    shards = ShardFiles("captions")
    assert shards.path(tmp_path, 0) == tmp_path / "captions.jsonl"
    assert shards.path(tmp_path, 2) == tmp_path / "captions.2.jsonl"
    for rank in (1, 0, 2):
        shards.path(tmp_path, rank).write_text(json.dumps({"rank": rank}) + "\n")
    (tmp_path / "other.jsonl").write_text("{}\n")
    assert [p.name for p in shards.paths(tmp_path)] == [
        "captions.jsonl",
        "captions.1.jsonl",
        "captions.2.jsonl",
    ]
    assert [row["rank"] for row in shards.rows(tmp_path)] == [0, 1, 2]
    shards.discard(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["other.jsonl"]


def test_a_torn_last_line_is_left_out(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"a": 1}\n{"a": ')
    assert read_predictions(path) == [{"a": 1}]


class OneProcess(SimpleNamespace):
    is_main_process = True
    num_processes = 1

    def wait_for_everyone(self) -> None:
        pass


def test_a_folder_refuses_other_settings_unless_overwritten(tmp_path):
    discarded = []

    def discard(path):
        discarded.append(path)
        (path / SETTINGS).unlink()

    def folder(settings: dict) -> OutputFolder:
        return OutputFolder(tmp_path, "--out", "attack", settings, discard, "fix it")

    first = folder({"seed": 0})
    assert first.resume(OneProcess(), lambda: {}, overwrite=False) == {}
    first.record()
    assert read_settings(tmp_path) == {"command": "attack", "settings": {"seed": 0}}
    other = folder({"seed": 1})
    assert other.resume(OneProcess(), lambda: {}, overwrite=False) == {}  # no results: reusable
    with pytest.raises(RunConflict, match=r"seed: 0 -> 1\): fix it"):
        other.resume(OneProcess(), lambda: {"x": 1}, overwrite=False)
    assert discarded == []
    assert other.resume(OneProcess(), lambda: {"x": 1}, overwrite=True) == {"x": 1}
    assert discarded == [tmp_path]
