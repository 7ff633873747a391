"""Out of GPU memory in a step: split the batch, accumulate gradients, warn, carry on."""
from __future__ import annotations

import pytest
import torch

from dtl_engine.errors import RunError
from dtl_engine.model.dtl import DTLModel
from dtl_engine.training import train
from run_builders import MODEL_KWARGS, Recorder, image_folder, run_weights, tiny_config


def _limit_batch(monkeypatch, largest: int) -> list[int]:
    """Make the model's forward raise CUDA's out-of-memory error for batches above ``largest``."""
    seen: list[int] = []
    forward = DTLModel.forward

    def forward_with_limit(self, images):
        seen.append(images.shape[0])
        if images.shape[0] > largest:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, images)

    monkeypatch.setattr(DTLModel, "forward", forward_with_limit)
    return seen


@pytest.mark.slow
def test_oom_splits_the_batch_and_keeps_the_effective_batch(tmp_path, monkeypatch):
    data = image_folder(tmp_path)
    config = tiny_config(data, epochs=2)
    reference = train(config, model_kwargs=MODEL_KWARGS)

    seen = _limit_batch(monkeypatch, largest=3)
    rec = Recorder()
    result = train(config, rec, model_kwargs=MODEL_KWARGS)
    assert result.status == "finished" and result.epochs_done == 2
    warnings = rec.of("warning")
    assert len(warnings) == 2 and "4 parts" in warnings[-1]      # 8 -> 2 parts of 4 (still too big) -> 4 parts of 2
    assert max(seen[seen.index(2):]) <= 3                         # after the split nothing too big is tried again
    assert len(rec.of("batch_finished")) == 6                     # same number of optimizer steps
    a, b = run_weights(reference.run_dir), run_weights(result.run_dir)
    for k in a:  # accumulated micro-batch gradients equal the whole batch's, up to float rounding
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_oom_with_single_images_fails_with_a_sentence(tmp_path, monkeypatch):
    _limit_batch(monkeypatch, largest=0)
    rec = Recorder()
    with pytest.raises(RunError, match="Out of memory even with one image"):
        train(tiny_config(image_folder(tmp_path), epochs=1), rec, model_kwargs=MODEL_KWARGS)
    assert "Out of memory" in rec.of("run_failed")[0][0]
