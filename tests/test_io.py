"""Durable writes (issue 10.10): a record or checkpoint is fsync'ed before the rename that
publishes it, and its folder after, so a node crash on NFS or Lustre cannot leave a renamed
empty file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dannasep import io


@pytest.fixture
def events(monkeypatch):
    """fsync and rename calls in order, each with the path it concerns."""
    seen = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        seen.append(("replace", str(Path(src).resolve()), str(Path(dst).resolve())))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return seen


def _check_order(seen: list, final: Path) -> None:
    """`final`'s contents were fsync'ed (under any of the names it was renamed through) before
    the rename onto `final`, and its folder after."""
    final = final.resolve()
    last = max(i for i, e in enumerate(seen) if e[0] == "replace" and e[2] == str(final))
    name, at, synced = seen[last][1], last, False
    while not synced:
        synced = ("fsync", name) in seen[:at]
        earlier = [i for i, e in enumerate(seen[:at]) if e[0] == "replace" and e[2] == name]
        if synced or not earlier:
            break
        at = earlier[-1]
        name = seen[at][1]
    assert synced, f"{final} published before its contents were fsync'ed: {seen}"
    assert ("fsync", str(final.parent)) in seen[last + 1:], f"folder not fsync'ed after the rename: {seen}"


def test_a_record_is_synced_before_and_its_folder_after_the_rename(tmp_path, events):
    target = tmp_path / "records" / "provenance.json"
    target.parent.mkdir()
    io.write_json(target, {"ok": True})
    _check_order(events, target)
    assert target.read_text().strip().startswith("{")


def test_a_checkpoint_and_its_pointer_are_synced_before_and_their_folders_after_the_rename(tmp_path, events):
    import json

    import torch

    from dannasep.checkpoint import build_record, save_final

    record = build_record(system="xumx", model_name="xumx", model_class="XUMX", model_kwargs={},
                          state_dict={"w": torch.ones(3)}, train_config={}, seed=0, manifest_hash=None)
    pointer = tmp_path / "xumx.json"
    final = save_final(record, tmp_path / "xumx", pointer)
    _check_order(events, final)
    _check_order(events, pointer)
    assert json.loads(pointer.read_text())["checkpoint"] == str(final)
    assert torch.load(final, weights_only=True)["state_dict"]["w"].sum() == 3
