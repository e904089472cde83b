"""The JSON result cache of finished searches and the tensor digest used in cache keys."""

import torch

from tmpdiff_core.schedule import Schedule
from tmpdiff_core.search.results import read_result, tensor_digest, write_result


def test_result_round_trip_and_bad_files_read_as_missing(tmp_path):
    path = tmp_path / "r.result.json"
    assert read_result(path) is None
    result = {"schedule": Schedule.from_precisions(["bf16", "fp8"]).to_dict(), "report": "x"}
    write_result(path, result)
    assert read_result(path) == result
    path.write_text("{truncated")
    assert read_result(path) is None
    path.write_text(
        '{"schedule": {"schema_version": 1, "precisions": ["fp9"], "boundaries": [1, 0]}}'
    )
    assert read_result(path) is None  # a schedule this tmpdiff cannot run is a cache miss


def test_tensor_digest_is_stable_and_sensitive():
    torch.manual_seed(0)
    cond = [[torch.randn(1, 4, 8), {"pooled_output": torch.randn(1, 8)}]]
    same = [[cond[0][0].clone(), {"pooled_output": cond[0][1]["pooled_output"].clone()}]]
    assert tensor_digest(cond) == tensor_digest(same)
    same[0][0][0, 0, 0] += 1e-3
    assert tensor_digest(cond) != tensor_digest(same)
