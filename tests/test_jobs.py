"""runtime/jobs: what a denoise run reads and writes, decided before any model loads (local and --ray alike)."""

from __future__ import annotations

import numpy as np
import pytest

from scaoed_deploy.errors import ScaoedError
from scaoed_deploy.images import Image, write_image
from scaoed_deploy.runtime.jobs import plan_jobs


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, Image(rgb=np.zeros((4, 4, 3), np.float32)))
    return path


def test_a_list_of_paths_plans_one_job_each_relative_to_the_list(tmp_path):
    a, b = _png(tmp_path / "x" / "a.png"), _png(tmp_path / "y" / "b.png")
    (tmp_path / "list.txt").write_text(f"# two images\nx/a.png\n\n{b}\nx/a.png\n")
    plan = plan_jobs(tmp_path / "list.txt", tmp_path / "out")
    assert not plan.single and [(j.src, j.dst) for j in plan.jobs] == [
        (a, tmp_path / "out" / "a.png"),
        (b, tmp_path / "out" / "b.png"),
    ]


def test_a_list_with_two_images_of_one_name_is_refused(tmp_path):
    _png(tmp_path / "x" / "a.png"), _png(tmp_path / "y" / "a.png")
    (tmp_path / "list.txt").write_text("x/a.png\ny/a.png\n")
    with pytest.raises(ScaoedError, match="two images named a.png"):
        plan_jobs(tmp_path / "list.txt", tmp_path / "out")


def test_outputs_that_exist_are_skipped_unless_overwrite_and_inputs_are_never_outputs(tmp_path):
    src = tmp_path / "in"
    for name in ("a.png", "b.png"):
        _png(src / name)
    _png(tmp_path / "out" / "a.png")
    plan = plan_jobs(src, tmp_path / "out")
    assert [j.src.name for j in plan.jobs] == ["b.png"] and plan.skipped == [str(tmp_path / "out" / "a.png")]
    assert len(plan_jobs(src, tmp_path / "out", overwrite=True).jobs) == 2
    with pytest.raises(ScaoedError, match="is the input folder"):
        plan_jobs(src, src, overwrite=True)
    (tmp_path / "self.txt").write_text(f"{src / 'a.png'}\n")
    with pytest.raises(ScaoedError, match="over its own input"):
        plan_jobs(tmp_path / "self.txt", src, overwrite=True)


def test_a_reference_folder_that_lacks_an_image_is_refused_before_any_work(tmp_path):
    _png(tmp_path / "in" / "a.png")
    (tmp_path / "refs").mkdir()
    with pytest.raises(ScaoedError, match="reference folder lacks 1 image"):
        plan_jobs(tmp_path / "in", tmp_path / "out", reference=tmp_path / "refs")
