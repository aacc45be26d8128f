"""A prompt so long that max_length leaves no answer token is never trained on silently: the pair is dropped
with its reason and counted (kept + dropped = read); every kept row keeps at least one answer token."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mdpo_pipeline.pipeline import train
from mdpo_pipeline.pipeline.project import ConfigError, Project
from mdpo_pipeline.pipeline.validate import validate_params
from mdpo_pipeline.training import data as training_data, models, reference
from mdpo_pipeline.training.data import DataCollatorForMDPO, fit_max_length, load_preference_dataset, prompt_lengths
from mdpo_pipeline.shapeworld.tiny import build_tiny_llava
from tests.conftest import REPO, write_tiny_training_data


def test_pairs_whose_prompt_fills_max_length_are_dropped_and_counted(tmp_path):
    _, processor = build_tiny_llava(image_size=32)
    data = write_tiny_training_data(tmp_path, n_pairs=6, image_size=32)
    dataset = load_preference_dataset(data["pairs"], data["images"], data["corrupted"])
    long_question = "describe the image " * 20

    def lengthen(row, i):
        if i == 2:
            row["prompt"] = [{**row["prompt"][0], "content": [{"type": "image"}, {"type": "text", "text": long_question}]}]
        return row

    dataset = dataset.map(lengthen, with_indices=True)
    lengths = prompt_lengths(dataset, processor)
    assert lengths[2] > 60 > max(lengths[:2] + lengths[3:])
    kept, dropped = fit_max_length(dataset, processor, max_length=60)
    assert len(kept) + len(dropped) == len(dataset) == 6
    assert [d["pair_id"] for d in dropped] == [dataset[2]["pair_id"]]
    assert dropped[0]["reason"] == "prompt_exceeds_max_length" and "max_length is 60" in dropped[0]["detail"]
    batch = DataCollatorForMDPO(processor, max_length=60)([kept[i] for i in range(len(kept))])
    assert (batch["completion_mask"].sum(dim=1) > 0).all()
    # Without the filter the long row would have trained on nothing.
    unfiltered = DataCollatorForMDPO(processor, max_length=60)([dataset[2]])
    assert int(unfiltered["completion_mask"].sum()) == 0

    assert fit_max_length(dataset, processor, max_length=None) == (dataset, [])


def test_pairs_of_a_quarantined_corrupted_image_leave_the_training_set(tmp_path, caplog):
    """corrupted_images quarantines an instruction whose image it cannot read or crop: training drops its pairs
    (warning with the count) instead of stopping on the missing corrupted image."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = write_tiny_training_data(tmp_path, n_pairs=4, image_size=32)
    manifest = pq.read_table(data["corrupted"] / "manifest.parquet").to_pylist()
    gone = manifest[1]["sample_id"]
    pq.write_table(pa.Table.from_pylist([m for m in manifest if m["sample_id"] != gone]),
                   data["corrupted"] / "manifest.parquet")
    with pytest.raises(ValueError, match=f"no corrupted image for instructions {gone}"):
        load_preference_dataset(data["pairs"], data["images"], data["corrupted"])
    pq.write_table(pa.table({"sample_id": [gone], "reason": ["undecodable_image"]}),
                   data["corrupted"] / "quarantine.parquet")
    with caplog.at_level("WARNING"):
        dataset = load_preference_dataset(data["pairs"], data["images"], data["corrupted"])
    assert len(dataset) == 3 and all(not pid.startswith(gone) for pid in dataset["pair_id"])
    assert "1 of 4 pairs dropped" in caplog.text


def test_max_length_is_one_setting_for_the_reference_cache_and_every_training_run(tmp_path, monkeypatch):
    """params.yaml:reference_logprobs.max_length (or, unset, the preset's) is what the reference_logprobs stage
    computes the cache with and what every method's run config trains with; training cannot set another."""
    seen = {}
    monkeypatch.setattr(train, "base_model_location", lambda project, settings=None: ("shapeworld-tiny", "base"))
    monkeypatch.setattr(train, "_training_data_dirs", lambda project: (Path("p"), Path("i"), Path("c")))
    monkeypatch.setattr(models, "load_model_and_processor", lambda *a, **kw: (None, None))
    monkeypatch.setattr(training_data, "load_preference_dataset", lambda *a: [])

    def compute(model, processor, dataset, batch_size, out, progress=False, max_length=None, packed_rows=True):
        seen["reference"] = max_length
        assert packed_rows is True  # params.yaml:training.packed_rows, default on
        out.parent.mkdir(parents=True, exist_ok=True)
        return {"n": 0}

    monkeypatch.setattr(reference, "compute_reference_logprobs", compute)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for setting, expected in ((None, 256), (96, 96)):
        params["reference_logprobs"]["max_length"] = setting
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        project = Project(tmp_path)
        train.run_reference_logprobs(project)
        for method in ("dpo", "mdpo", "dpo_no_image"):
            cfg = train.train_run_config(project, method, tmp_path / method)
            assert cfg["max_length"] == cfg.parse(cuda=False)[1].max_length == seen["reference"] == expected
    params["training"]["methods"] = {"mdpo": {"max_length": 128}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="training.methods.mdpo.max_length: max_length is one setting"):
        validate_params(Project(tmp_path))
