"""virnucpro-check: the self-check a user runs on a new node. On this CPU machine it must pass
with the test models (as a real process, the way a user runs it), and fail with one verdict line
and a non-zero exit when the node cannot run the pipeline as asked."""

import os
import re
import shutil

import pytest

from helpers import run_tool
from virnucpro.check import check, sample_frames
from virnucpro.errors import UserError


def findings(stdout):
    """{topic: [text, ...]} of the check's report lines ('topic:      text')."""
    found = {}
    for line in stdout.splitlines():
        match = re.fullmatch(r"(\w+):\s+(.*)", line)
        assert match, f"not a report line: {line!r}"
        found.setdefault(match.group(1), []).append(match.group(2))
    return found


def min_cosine(lines):
    (value,) = [float(m.group(1)) for line in lines for m in [re.search(r"cosine .* min ([\d.]+|nan)", line)] if m]
    return value


def test_check_passes_on_this_machine_with_the_test_models():
    """The default run (no models given, --device auto) as a user runs it: every finding, then OK."""
    import torch

    result = run_tool("virnucpro-check")
    found = findings(result.stdout)
    assert found["verdict"] == [found["verdict"][0]] and found["verdict"][0].startswith("OK")
    assert result.stdout.rstrip().splitlines()[-1].startswith("verdict: OK")
    assert f"torch {torch.__version__}" in found["versions"][0]
    assert "CUDA" in found["cuda"][0] and "driver" in found["cuda"][0]
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert found["device"][0].startswith(expected + ":")
    assert found["compile"][0].startswith("not used on cpu" if expected == "cpu" else ("works", "WARNING"))
    for kind in ("dnabert", "esm"):
        lines = found[kind]
        assert lines[0].startswith(f"test model ({kind}): loaded on {expected}") and "24 frames embedded" in lines[0]
        assert min_cosine(lines) >= (0.9999 if expected == "cpu" else 0.999)
        (rate,) = [int(m.group(1).replace(",", "")) for line in lines
                   for m in [re.match(r"throughput estimate ([\d,]+) tokens/s", line)] if m]
        assert rate > 0 and "estimate" in lines[-1]
    assert "Traceback" not in result.stderr


@pytest.mark.gpu
def test_check_passes_on_a_gpu_with_the_test_models():
    """GPU twin of the CPU run above: cuda:0, bf16 against the CPU's fp32, compile working or stepping aside."""
    result = run_tool("virnucpro-check", "--device", "cuda")
    found = findings(result.stdout)
    assert found["device"][0].startswith("cuda:0: ") and "bf16 yes" in found["device"][0]
    assert found["compile"][0].startswith(("works", "WARNING: fails"))
    for kind in ("dnabert", "esm"):
        assert found[kind][0].startswith(f"test model ({kind}): loaded on cuda:0 (bf16, ")
        assert min_cosine(found[kind]) >= 0.999
        assert any("peak GPU memory" in line for line in found[kind])
    assert found["verdict"][0].startswith("OK: this node can run the pipeline on cuda:0")


def test_a_gpu_asked_for_but_absent_fails_at_once(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    result = run_tool("virnucpro-check", "--device", "cuda", check=False)
    assert result.returncode == 1
    found = findings(result.stdout)
    assert found["device"] == ["FAIL: --device cuda: no CUDA GPU is visible"]
    assert found["verdict"] == ["FAIL: device: --device cuda: no CUDA GPU is visible"]
    assert "dnabert" not in found and "esm" not in found  # nothing else to check without the device
    assert result.stderr.strip().splitlines() == ["virnucpro-check: error: this node cannot run the pipeline as asked "
                                                  "(1 problem(s); see above)"]


def test_a_model_that_does_not_load_fails_naming_it_and_the_other_model_is_still_checked(test_models, tmp_path, capsys):
    broken = tmp_path / "dnabert"
    shutil.copytree(test_models["dnabert"], broken)
    os.remove(broken / "pytorch_model.bin")
    with pytest.raises(UserError, match="cannot run the pipeline"):
        check(device="cpu", dnabert_model=str(broken), esm_model=test_models["esm"], frames=4, seconds=0.01)
    found = findings(capsys.readouterr().out)
    assert found["dnabert"] == [f"FAIL: {broken}: no weights (model.safetensors or pytorch_model.bin)"]
    assert found["esm"][0].startswith(f"{test_models['esm']}: loaded on cpu (fp32)")
    assert found["verdict"][0].startswith(f"FAIL: dnabert: {broken}")
    assert "esm" not in found["verdict"][0]


def test_vectors_that_differ_from_the_cpu_beyond_the_tolerance_fail(test_models, capsys):
    """bf16 on the device against the CPU's fp32: within the default bf16 tolerance, beyond a stricter one."""
    check(device="cpu", dnabert_model=test_models["dnabert"], esm_model=test_models["esm"], precision="bf16",
          frames=4, seconds=0.01)
    found = findings(capsys.readouterr().out)
    for kind in ("dnabert", "esm"):
        assert 0.999 <= min_cosine(found[kind]) < 1.0
        assert found[kind][0].startswith(f"{test_models[kind]}: loaded on cpu (bf16)")
    with pytest.raises(UserError):
        check(device="cpu", dnabert_model=test_models["dnabert"], esm_model=test_models["esm"], precision="bf16",
              frames=4, seconds=0.01, min_cosine=0.99999999)
    found = findings(capsys.readouterr().out)
    assert found["dnabert"][-1].startswith("FAIL: cosine cpu bf16 (batched) vs cpu fp32 (one at a time): min")
    assert found["dnabert"][-1].endswith("< 0.99999999")
    assert not any("throughput" in line for line in found["dnabert"])  # a failed comparison stops that model
    assert found["verdict"][0].startswith("FAIL: dnabert: cosine") and "; esm: cosine" in found["verdict"][0]


def failing_compile(function, *args, **kwargs):
    """torch.compile as it behaves without a C compiler: set up fine, fails at the first call."""

    def call(*a, **k):
        raise RuntimeError("InductorError: InvalidCxxCompiler: No working C++ compiler found")

    return call


def test_compile_that_fails_is_reported_and_extraction_falls_back_to_eager(test_models, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch, "compile", failing_compile)
    check(device="cpu", compile="on", dnabert_model=test_models["dnabert"], esm_model=test_models["esm"],
          frames=4, seconds=0.01)
    found = findings(capsys.readouterr().out)
    assert found["compile"] == ["WARNING: fails (RuntimeError: InductorError: InvalidCxxCompiler: No working C++ "
                                "compiler found); extraction falls back to eager (slower, same results)"]
    for kind in ("dnabert", "esm"):
        assert found[kind][0].startswith(f"{test_models[kind]}: loaded on cpu (fp32, eager: compiling failed)")
        assert min_cosine(found[kind]) >= 0.9999
    assert found["verdict"] == ["OK: this node can run the pipeline on cpu (1 warning(s) above)"]


def test_compile_that_fails_without_a_fallback_fails_the_check(test_models, monkeypatch, capsys):
    import torch

    from virnucpro.engine import pooling

    def no_fallback(self, *args, **kwargs):
        raise RuntimeError("no fallback")

    monkeypatch.setattr(torch, "compile", failing_compile)
    monkeypatch.setattr(pooling.CompiledOrEager, "__call__", no_fallback)
    with pytest.raises(UserError):
        check(device="cpu", compile="on", dnabert_model=test_models["dnabert"], esm_model=test_models["esm"],
              frames=2, seconds=0.01)
    found = findings(capsys.readouterr().out)
    assert found["compile"][0].startswith("FAIL: fails and extraction does not fall back to eager")
    assert found["verdict"][0].startswith("FAIL: compile: ")


def test_bad_options_are_one_line_errors():
    for args, message in ((["--frames", "0"], "--frames 0: must be a positive whole number"),
                          (["--seconds", "-1"], "--seconds -1: must be a positive number"),
                          (["--min_cosine", "2"], "--min_cosine 2: must be a number from -1 to 1"),
                          (["--device", "tpu"], "--device tpu: use auto, cpu, cuda or cuda:N")):
        result = run_tool("virnucpro-check", *args, check=False)
        assert result.returncode == 1, args
        assert message in result.stdout + result.stderr, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr


def test_sample_frames_have_the_shapes_of_500_bp_chunk_frames():
    dna, proteins = sample_frames(500)
    assert dna == sample_frames(500)[0]  # deterministic
    lengths = [len(seq) for seq in dna]
    assert min(lengths) >= 100 and max(lengths) <= 499 and sum(496 <= n <= 499 for n in lengths) > 350
    assert [len(p) for p in proteins] == [(n - 1) // 3 for n in lengths]
    assert set("".join(dna)) == set("ACGT")
