"""The "Use" section of PreZoo model cards: code that runs as pasted (tests/test_cards.py runs it), shared by the
zoo's exports (export.hf) and fine-tuned models (training.finetune), which may not import each other."""

from __future__ import annotations

from typing import Any

# A card's library_name: the package that loads the model. Not "timm": the Hub turns a library into a "use this model"
# snippet, and timm's alone fails ("Unknown model": PreZoo's package registers the architecture), so no card or family
# claims timm as its library or tag. The license: PreZoo's own (pyproject.toml, LICENSE).
LIBRARY, LICENSE = "prezoo", "apache-2.0"


def card_tags(tags: list[str], *extra: str) -> list[str]:
    """A card's tags: a family's (`hub_tags`) less "timm" (a plug-in family may carry it; the Hub may read a library
    from a tag), and `extra`."""
    return [tag for tag in tags if tag != "timm"] + list(extra)


INSTALL = ("# needs PreZoo's package, prezoo: `pip install .` in a PreZoo checkout or `pip install prezoo-*.whl` (its "
           "wheel)")
# a picture to classify, so the snippet runs as it is: swap in your own
STAND_IN = """image = Image.new("RGB", (96, 96), "white")  # a stand-in picture; use Image.open("your-image.jpg")
ImageDraw.Draw(image).rectangle((30, 8, 66, 88), fill="black")"""
# PreZoo's eval preprocessing (the server's, timm's eval transform): central crop_pct of the picture, resized
PREPROCESS = """mode = "L" if pre["in_chans"] == 1 else "RGB"
resample = Image.Resampling[pre["interpolation"].upper()]
view = ImageOps.fit(image.convert(mode), (pre["img_size"],) * 2, resample, bleed=(1 - pre["crop_pct"]) / 2)
x = np.asarray(view, np.float32).reshape(view.height, view.width, -1) / 255
x = ((x - pre["mean"]) / pre["std"]).transpose(2, 0, 1)[None].astype(np.float32)  # (1, C, H, W)"""


def model_usage(repo_id: str | None, hub_class: Any) -> str:
    """The 'Use' section: timm (and ONNX Runtime, for a repo, which holds the ONNX files); `hub_class` is the model's
    Hugging Face class (zoo.pretrained: its name, timm name and `weights_layout`)."""
    source = f"hf-hub:{repo_id}" if repo_id else "local-dir:."
    where = ("" if repo_id else "\nRun it in the folder holding this card, `config.json` and `model.safetensors`; once "
                                "pushed (`python -m export push`), the repo's card loads `hf-hub:<repo id>`.\n")
    torch_code = f"""```python
{INSTALL}
import timm
import torch
from PIL import Image, ImageDraw
from timm.data import create_transform, resolve_model_data_config

import zoo  # noqa: F401  (registers PreZoo's architecture, {hub_class.timm_name}, in timm)

model = timm.create_model("{source}", pretrained=True).eval()
config = resolve_model_data_config(model)  # input size, mean/std, interpolation, crop: from config.json
transform = create_transform(**config)
labels = model.pretrained_cfg["label_names"]

{STAND_IN}
x = transform(image.convert("L" if config["input_size"][0] == 1 else "RGB")).unsqueeze(0)
with torch.no_grad():
    probabilities = model(x).softmax(-1)[0]
values, indices = probabilities.topk(3)
for p, i in zip(values.tolist(), indices.tolist(), strict=True):
    print(f"{{labels[i]}}: {{p:.3f}}")
```"""
    same = (f"`zoo.{hub_class.__name__}.from_pretrained(\"{repo_id or '.'}\")` loads the same weights without timm's "
            f"factory (strictly). Plain safetensors: `safetensors.torch.load_file(\"model.safetensors\")` with "
            f"`config.json`'s `model_args` and {hub_class.weights_layout}; the file's own metadata "
            f"(`safe_open(...).metadata()`) holds the family, arch, space, labels and preprocessing.")
    if not repo_id:
        return f"## Use\n{where}\n{torch_code}\n\n{same}\n"
    onnx_code = f"""```python
# pip install onnxruntime huggingface_hub pillow numpy  (no PreZoo needed)
import json

import numpy as np
import onnxruntime as ort
from huggingface_hub import hf_hub_download
from PIL import Image, ImageDraw, ImageOps

session = ort.InferenceSession(hf_hub_download("{repo_id}", "model.onnx"), providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map  # labels and preprocessing travel inside the file
pre, labels = json.loads(meta["prezoo.preprocessing"]), json.loads(meta["prezoo.labels"])

{STAND_IN}
{PREPROCESS}
logits = session.run([meta["prezoo.output"]], {{meta["prezoo.input"]: x}})[0][0]
probabilities = np.exp(logits - logits.max())
probabilities /= probabilities.sum()
print(f"{{labels[int(probabilities.argmax())]}}: {{probabilities.max():.3f}}")
```"""
    return f"""## Use
With timm:

{torch_code}

{same}

With ONNX Runtime alone: `model.onnx` (fp32), `model.int8.onnx` (dynamic INT8: smaller and faster on CPU),
`model.fp16.onnx` (fp16 inside, fp32 inputs and outputs: for GPUs). Each carries the labels and preprocessing in its
metadata.

{onnx_code}
"""
