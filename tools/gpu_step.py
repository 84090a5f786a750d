"""One prepared GPU check: `fakenews.train` on CUDA, fp32 against bf16-mixed, then the default recipe for one epoch.

Run from the repo root on a CUDA machine with the package importable (PYTHONPATH=.), the MiniLM folder at
.gpu/minilm (carried as fp16 to fit a 64 MB transfer; widened to fp32 here) and prepared splits under
.gpu/home/data. Prints one JSON line per run and writes them all to $OUT/gpu_step.json.
"""
import json
import os
import time
import warnings

import torch
from transformers import AutoModel, AutoTokenizer

from fakenews.core import Config, ModelConfig, TrainConfig
from fakenews.train import train

SOURCE, BACKBONE, HOME = ".gpu/minilm", "/tmp/minilm", os.path.abspath(".gpu/home")


def run(name: str, **train_settings) -> dict:
    "Train MiniLM with `train_settings` on the GPU; steps, training titles/s, wall time, test scores, peak memory."
    cfg = Config(home=HOME, model=ModelConfig(backbone=BACKBONE),
                 train=TrainConfig(wandb=False, register_as=None, run_name=name, accelerator="gpu", devices="1",
                                   checkpoint_every_n_steps=100_000, **train_settings))
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    metrics = train(cfg, progress=False).metrics
    return {"run": name, **train_settings, "steps": metrics["steps"], "titles/s (training)": metrics["samples_per_second"],
            "wall s": round(time.perf_counter() - start, 1), "val/loss": round(metrics["val/loss"], 4),
            **{k: round(v, 4) for k, v in metrics.items() if k.startswith("test/") and k.endswith("f1")},
            "max GPU GB": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def main() -> None:
    warnings.filterwarnings("ignore")
    AutoModel.from_pretrained(SOURCE, dtype=torch.float32).float().save_pretrained(BACKBONE)
    AutoTokenizer.from_pretrained(SOURCE).save_pretrained(BACKBONE)
    print(torch.__version__, torch.cuda.get_device_name(0), flush=True)
    rows = []
    for batch_size, steps in ((32, 300), (256, 100)):
        for precision in ("32-true", "bf16-mixed"):
            rows.append(run(f"b{batch_size}-{precision}", precision=precision, max_steps=steps, batch_size=batch_size,
                            val_check_interval=1000))
            print(json.dumps(rows[-1]), flush=True)
    for precision in ("bf16-mixed", "32-true"):  # the default recipe: batch 32, lr 5e-5, one epoch
        rows.append(run(f"epoch-{precision}", precision=precision))
        print(json.dumps(rows[-1]), flush=True)
    with open(os.path.join(os.environ.get("OUT", "/tmp"), "gpu_step.json"), "w") as f: json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
