"""``tmpdiff demo`` end to end on the shipped reference model (1 prompt, 1 schedule)."""

import json

from tmpdiff_core.cli import main
from tmpdiff_core.schedule import Schedule


def test_demo_writes_grid_strips_and_report(tmp_path):
    steps = 6
    plan = ["bf16", "fp8", "fp8", "int8", "bf16", "bf16"]
    path = Schedule.from_precisions(plan, name="test").save(tmp_path / "s.json")
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--prompts", "1", "--schedule", str(path)]) == 0
    report = json.loads((out / "report.json").read_text())
    (row,) = report["schedules"]
    assert row["precisions"] == plan and len(row["precisions"]) == steps
    assert 0.5 < row["ssim"] < 1.0  # low-precision steps change the image, but not much
    assert set(report["costs_ms_here"]) == {"bf16", "fp8", "int8"}
    assert (out / "grid.png").stat().st_size > 0
    assert len(list(out.glob("strip-*.png"))) == 1
    assert "SSIM" in (out / "report.md").read_text()
