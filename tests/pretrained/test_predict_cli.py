"""`launch.py predict`: end to end on a photograph with a small random ViT checkpoint (its logits
against transformers'), one-line errors, and the wiring of --explain, detect and rank-captions."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from attn_jax.pretrained import checkpoint_files

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def launch():
    spec = importlib.util.spec_from_file_location("launch_under_test", ROOT / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_classify_json_matches_transformers(small_vit, china_path, china_image):
    model, directory = small_vit
    command = [sys.executable, str(ROOT / "launch.py"), "predict", "classify"]
    command += ["--weights", str(directory), "--image", str(china_path), "--top-k", "3", "--json"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    result = json.loads(lines[-1])

    processor = transformers.ViTImageProcessorPil(size={"height": 32, "width": 32})
    pixels = processor(china_image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        reference = model(pixel_values=pixels).logits.numpy()[0]
    logits = np.asarray(result["logits"])
    np.testing.assert_allclose(logits, reference, atol=1e-4, rtol=0)

    probabilities = np.exp(reference - reference.max())
    probabilities /= probabilities.sum()
    top = np.argsort(-reference)[:3]
    labels = ["cat", "dog", "ship", "tree"]
    assert [p["label"] for p in result["predictions"]] == [labels[i] for i in top]
    np.testing.assert_allclose(
        [p["probability"] for p in result["predictions"]], probabilities[top], atol=1e-5
    )
    # The readable lines precede the JSON: "probability  label", best first.
    assert [line.split()[-1] for line in lines[:-1]] == [labels[i] for i in top]
    assert result["image_size"] == [427, 640]


def _main(launch, capsys, *args: str) -> tuple[int, list[str], list[str]]:
    code = launch.main(["predict", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def test_errors_are_one_line(launch, capsys, small_vit, china_path, tmp_path):
    _, directory = small_vit
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("no photograph here")
    cases = [
        (
            ["classify", "--weights", str(directory), "--image", str(tmp_path / "none.jpg")],
            "does not exist",
        ),
        (["classify", "--weights", str(directory), "--image", str(text_file)], "not an image"),
        (["classify", "--weights", str(tmp_path), "--image", str(china_path)], "config.json"),
        (
            ["detect", "--weights", str(directory), "--image", str(china_path)],
            "use `predict classify`",
        ),
    ]
    for args, message in cases:
        code, out, err = _main(launch, capsys, *args)
        assert code == 2 and out == []
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_explain_writes_and_reports_pngs(
    launch, capsys, small_vit, china_path, tmp_path, monkeypatch
):
    _, directory = small_vit
    calls = []

    def explain_classification(pretrained, image, out_dir):
        calls.append((pretrained.kind, Path(image), Path(out_dir)))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "rollout.png").write_bytes(b"png")
        return [Path(out_dir) / "rollout.png"]

    fake = types.ModuleType("attn_jax.programs.explain")
    fake.explain_classification = explain_classification
    monkeypatch.setitem(sys.modules, "attn_jax.programs.explain", fake)
    out_dir = tmp_path / "heatmaps"
    code, out, _ = _main(
        launch,
        capsys,
        "classify",
        "--weights",
        str(directory),
        "--image",
        str(china_path),
        "--explain",
        "--out",
        str(out_dir),
        "--json",
    )
    assert code == 0
    assert calls == [("classify", china_path, out_dir)]
    assert f"wrote {out_dir / 'rollout.png'}" in out
    assert json.loads(out[-1])["explanations"] == [str(out_dir / "rollout.png")]


def _fake_pretrained(kind: str) -> checkpoint_files.Pretrained:
    return checkpoint_files.Pretrained(model=None, variables={}, preprocess=None, kind=kind)


def test_detect_and_rank_captions_wiring(launch, capsys, china_path, tmp_path, monkeypatch):
    import attn_jax.pretrained as pretrained_package

    monkeypatch.setattr(pretrained_package, "load", lambda path: _fake_pretrained(path))
    seen = {}

    def predict_detect(pretrained, image, *, threshold, out_png):
        seen["detect"] = (threshold, Path(out_png))
        detection = {"label": "cat", "label_id": 17, "score": 0.9, "box": [1.0, 2.0, 3.0, 4.0]}
        return {
            "detections": [detection],
            "logits": [[0.0]],
            "boxes": [[0.5] * 4],
            "out_png": str(out_png),
        }

    detr = types.ModuleType("attn_jax.pretrained.detr")
    detr.predict_detect = predict_detect
    monkeypatch.setitem(sys.modules, "attn_jax.pretrained.detr", detr)
    png = tmp_path / "boxes.png"
    code, out, _ = _main(
        launch,
        capsys,
        "detect",
        "--weights",
        "detect",
        "--image",
        str(china_path),
        "--threshold",
        "0.7",
        "--out",
        str(png),
        "--json",
    )
    assert code == 0 and seen["detect"] == (0.7, png)
    assert out[0] == "0.900  cat  [1.0, 2.0, 3.0, 4.0]"
    assert json.loads(out[-1])["boxes"] == [[0.5] * 4]

    def predict_rank_captions(pretrained, image, captions):
        return {"probabilities": [0.25, 0.75], "logits_per_image": [[1.0, 2.1]]}

    clip = types.ModuleType("attn_jax.pretrained.clip")
    clip.predict_rank_captions = predict_rank_captions
    monkeypatch.setitem(sys.modules, "attn_jax.pretrained.clip", clip)
    code, out, _ = _main(
        launch,
        capsys,
        "rank-captions",
        "--weights",
        "contrastive",
        "--image",
        str(china_path),
        "--caption",
        "a temple",
        "--caption",
        "a cat",
        "--json",
    )
    assert code == 0 and out[:2] == ["0.2500  a temple", "0.7500  a cat"]
    assert json.loads(out[-1])["logits_per_image"] == [[1.0, 2.1]]
    code, _, err = _main(
        launch,
        capsys,
        "detect",
        "--weights",
        "detect",
        "--image",
        str(china_path),
        "--threshold",
        "1.5",
    )
    assert code == 2 and "--threshold must be in [0, 1)" in err[0]
