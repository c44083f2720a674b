"""TensorBoard's own reader on the event files of a training run (python3 on PATH with the pip
`tensorboard` package, installed by scripts/setup).

Loads <trainer_dir>/summaries/train and summaries/eval_validation with TensorBoard's
EventAccumulator and checks that every training step's "loss" scalar and the evaluation's
"loss"/"accuracy" equal, as float32, the values the trainer wrote to metrics.jsonl.
Usage: check_tensorboard_events.py TRAINER_DIR
"""
import json
import os
import struct
import sys

from tensorboard.backend.event_processing import event_accumulator


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def load(path):
    acc = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return acc


def main():
    trainer_dir = sys.argv[1]
    train_loss, eval_metrics = {}, {}
    with open(os.path.join(trainer_dir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "loss" in rec:
                train_loss[rec["step"]] = rec["loss"]
            if "eval" in rec:
                eval_metrics[rec["step"]] = rec["eval"]["validation"]
    failures = []

    train = load(os.path.join(trainer_dir, "summaries", "train"))
    tags = train.Tags()["scalars"]
    for tag in ("loss", "model/accuracy", "learner/learning_rate", "learner/gradient_norm"):
        if tag not in tags:
            failures.append(f"train: scalar {tag!r} missing (have {sorted(tags)})")
    seen = {e.step: e.value for e in train.Scalars("loss")} if "loss" in tags else {}
    if sorted(seen) != sorted(train_loss):
        failures.append(f"train: loss steps {sorted(seen)} != metrics.jsonl {sorted(train_loss)}")
    for step, value in train_loss.items():
        if step in seen and seen[step] != f32(value):
            failures.append(f"train: step {step} loss {seen[step]!r} != {f32(value)!r}")

    ev = load(os.path.join(trainer_dir, "summaries", "eval_validation"))
    for name in ("loss", "accuracy", "perplexity"):
        got = {e.step: e.value for e in ev.Scalars(name)} if name in ev.Tags()["scalars"] else {}
        for step, m in eval_metrics.items():
            if got.get(step) != f32(m[name]):
                failures.append(f"eval: step {step} {name} {got.get(step)!r} != {f32(m[name])!r}")
    if not eval_metrics:
        failures.append("metrics.jsonl has no evaluation")

    print(f"tensorboard read {len(seen)} training losses and {len(eval_metrics)} evaluations")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
