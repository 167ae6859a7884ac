"""Mixed precision: bf16 on CPU here; bf16/fp16 on CUDA where a GPU exists (skipped otherwise)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gancore.recipe import load_recipe
from gancore.engine import TrainingError, train

RECIPE = {
    "recipe": {"name": "precision"},
    "data": {"source": "blobs", "resolution": 16, "size": 32},
    "parts": {"G": {"use": "basic.generator", "width": 8, "z_dim": 8},
              "D": {"use": "basic.discriminator", "width": 8}},
    "schedule": {"use": "alternating"},
    "train": {"steps": 3, "batch_size": 4, "log_every": 1},
    "output": {"sample_every": 3, "checkpoint_every": 3, "num_samples": 2},
}


def _run(tmp_path: Path, precision: str, device: str) -> Path:
    resolved = load_recipe(RECIPE, [f"train.precision='{precision}'", f"train.device='{device}'",
                                    f"output.dir='{(tmp_path / precision).as_posix()}'"])
    return train(resolved, progress=False)


def _accelerator(tmp_path: Path, precision: str):
    """The Accelerator a CPU run of RECIPE with this precision gets."""
    from gancore.engine import make_accelerator

    return make_accelerator(load_recipe(RECIPE, [f"train.precision='{precision}'", "train.device='cpu'",
                                                 f"output.dir='{tmp_path.as_posix()}'"]), tmp_path)


def test_bf16_on_cpu_trains_and_logs_finite_losses(tmp_path: Path) -> None:
    run = _run(tmp_path, "bf16", "cpu")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(v)) for r in rows for k, v in r.items() if "/" in k)


@pytest.mark.parametrize("flags, native", [
    ({"avx512_f": True, "avx512_bw": True, "avx512_vl": True, "avx512_bf16": False, "amx_bf16": False}, False),
    ({"avx512_f": True, "avx512_bf16": True}, True),  # e.g. Zen 4, Cooper Lake
    ({"avx512_f": True, "avx512_bf16": False, "amx_bf16": True}, True),  # Sapphire Rapids' AMX
    ({"avx2": True}, False),
    ({}, False),
])
def test_native_bf16_means_the_bf16_instructions_not_just_avx512(flags: dict[str, bool], native: bool) -> None:
    """An AVX-512 CPU without AVX-512 BF16 / AMX emulates bf16 (oneDNN calls that 'supported')."""
    from gancore import engine

    assert engine.cpu_has_native_bf16(flags) is native


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_native_bf16_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], native: bool) -> None:
    from gancore import engine

    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: native)
    _accelerator(tmp_path, "bf16")
    said = "this CPU has no native bf16 instructions" in capsys.readouterr().err
    assert said == (not native)


@pytest.mark.parametrize("native, want", [(True, "bf16"), (False, "no")])
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str],
                                                               native: bool, want: str) -> None:
    from gancore import engine

    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: native)
    acc = _accelerator(tmp_path, "auto")
    assert acc.mixed_precision == want
    err = capsys.readouterr().err
    assert "train.precision = 'auto': " + ("bf16 autocast" if native else "fp32") in err


def test_auto_precision_trains(tmp_path: Path) -> None:
    run = _run(tmp_path, "auto", "cpu")
    assert (run / "checkpoints" / "step_000003" / "model.safetensors").is_file()


def test_fp16_on_cpu_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="fp16' needs a GPU"):
        _run(tmp_path, "fp16", "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_gpu(tmp_path: Path, precision: str) -> None:
    run = _run(tmp_path, precision, "cuda")
    assert (run / "checkpoints" / "step_000003" / "model.safetensors").is_file()
