"""Schedule JSON format: round trip, resampling, and a table of bad inputs with their errors."""

import json
import re

import pytest

from tmpdiff_core import Schedule, ScheduleError, ScheduleNotFoundError
from tmpdiff_core.schedule import MAX_SCHEDULE_BYTES, CostInfo, SamplerInfo


def _doc(**overrides):
    doc = {"schema_version": 1, "precisions": ["bf16", "bf16"], "boundaries": [1.0, 0.5, 0.0]}
    doc.update(overrides)
    return doc


def test_round_trip_keeps_every_field(tmp_path):
    s = Schedule.from_precisions(
        ["fp32", "bfloat16", "bf16"],
        name="demo",
        sampler=SamplerInfo(name="euler", scheduler="FlowMatchEuler", steps=3, guidance=4.0),
        quality={"ssim": 0.97, "psnr": 31.2},
        cost=CostInfo(speedup=1.25, table={"bf16": 10.0}, device="H100"),
        search={"evaluations": 12},
    )
    path = s.save(tmp_path / "s.json")
    loaded = Schedule.load(path)
    assert loaded == s
    assert loaded.precisions == ["fp32", "bf16", "bf16"]  # aliases canonicalized
    assert json.loads(path.read_text())["schema_version"] == 1


def test_precision_at_and_resampling_follow_the_time_axis():
    s = Schedule.from_precisions(["bf16", "fp32", "fp16", "bf16"])
    assert [s.precision_at(t) for t in (1.0, 0.76, 0.75, 0.3, 0.0)] == [
        "bf16",
        "bf16",
        "fp32",
        "fp16",
        "bf16",
    ]
    eight = [1 - i / 8 for i in range(9)]
    assert s.for_grid(eight) == ["bf16", "bf16", "fp32", "fp32", "fp16", "fp16", "bf16", "bf16"]
    same_n_other_spacing = [1.0, 0.9, 0.8, 0.7, 0.0]
    assert s.for_grid(same_n_other_spacing) == s.precisions


def test_summary_and_table_are_readable():
    s = Schedule.from_precisions(["bf16", "bf16", "fp32"])
    assert s.summary() == "3 steps: bf16×2 fp32×1"
    assert s.table().splitlines()[3].split() == ["2", "0.3333", "0.0000", "fp32"]


BAD_DOCUMENTS = [
    ("not an object", [1, 2], "must be a JSON object"),
    ("no version", {"precisions": ["bf16"], "boundaries": [1, 0]}, "schema_version"),
    ("newer version", _doc(schema_version=9), "newer tmpdiff"),
    ("string version", _doc(schema_version="1"), "must be an integer"),
    ("unknown precision", _doc(precisions=["bf16", "fp9"]), "unknown precision 'fp9'"),
    ("non-string precision", _doc(precisions=["bf16", 8]), "precisions[1]"),
    ("missing precisions", {"schema_version": 1, "boundaries": [1, 0]}, "'precisions'"),
    ("empty precisions", _doc(precisions=[], boundaries=[1.0]), "non-empty"),
    ("wrong length", _doc(boundaries=[1.0, 0.0]), "steps+1 = 3"),
    ("non-monotonic", _doc(boundaries=[1.0, 0.0, 0.5]), "decrease strictly"),
    ("out of range", _doc(boundaries=[2.0, 0.5, 0.0]), "[0, 1]"),
    ("unknown field", _doc(precision=["bf16"]), "unknown schedule field"),
    ("bad axis", _doc(time_axis="frames"), "time_axis"),
    ("layer group length", _doc(layer_groups={"attn": ["bf16"]}), "one precision per step"),
    ("layer group precision", _doc(layer_groups={"attn": ["bf16", "x"]}), "layer_groups['attn']"),
    ("bad quality", _doc(quality={"ssim": "high"}), "quality.ssim"),
    ("bad model block", _doc(model=[1]), "'model' must be a JSON object"),
    ("bad sampler key", _doc(sampler={"stepz": 2}), "malformed metadata"),
    ("steps mismatch", _doc(sampler={"steps": 3}), "one precision per step"),
]


@pytest.mark.parametrize("label,doc,message", BAD_DOCUMENTS, ids=[b[0] for b in BAD_DOCUMENTS])
def test_bad_documents_give_specific_errors(label, doc, message):
    with pytest.raises(ScheduleError, match=re.escape(message)):
        Schedule.from_json(json.dumps(doc))


@pytest.mark.parametrize(
    "text,message",
    [
        ('{"schema_version": 1, "precisions": ["bf16"], "boundaries": [1, NaN]}', "NaN"),
        ('{"schema_version": 1, "precisions": ["bf16"], "boundaries": [1, Infinity]}', "Infinity"),
        ("{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
    ],
)
def test_bad_text_gives_specific_errors(text, message):
    with pytest.raises(ScheduleError, match=message):
        Schedule.from_json(text)


def test_oversized_file_is_refused_before_reading(tmp_path, monkeypatch):
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_SCHEDULE_BYTES + 1))
    monkeypatch.setattr(type(big), "read_bytes", lambda self: pytest.fail("file was read"))
    with pytest.raises(ScheduleError, match="cap"):
        Schedule.load(big)


def test_missing_file_is_not_found(tmp_path):
    with pytest.raises(ScheduleNotFoundError, match="not found"):
        Schedule.load(tmp_path / "nope.json")


def test_errors_are_value_errors_for_callers_that_catch_builtins():
    with pytest.raises(ValueError):
        Schedule.from_precisions(["fp9"])
