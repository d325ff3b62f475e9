"""A small training script for trying hsm. Needs only the standard library.

It takes Hydra-style ``key=value`` arguments, pretends to train for a few steps, and
writes ``metrics.json`` into its task folder (``$HSM_TASK_DIR``, set by hsm, or an
``output.dir=...`` argument when the sweep sets ``output_dir_arg: output.dir``).
"""

import json
import math
import os
import random
import sys
import time


def parse(argv: list[str]) -> dict[str, object]:
    params: dict[str, object] = {}
    for arg in argv:
        key, _, value = arg.lstrip("+").partition("=")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value.strip("'\"")
    return params


def main() -> int:
    params = parse(sys.argv[1:])
    out_dir = str(params.get("output.dir") or os.environ.get("HSM_TASK_DIR") or ".")
    lr = float(params.get("optimizer.lr", params.get("lr", 0.01)))  # type: ignore[arg-type]
    seed = int(params.get("seed", 0))  # type: ignore[call-overload]
    steps = int(params.get("steps", 5))  # type: ignore[call-overload]
    rng = random.Random(seed)
    loss = 2.0
    for step in range(steps):
        loss *= math.exp(-lr * 10) * (1 + rng.uniform(-0.02, 0.02))
        print(f"step {step}: loss {loss:.4f}", flush=True)
        time.sleep(float(params.get("step_time", 0.05)))  # type: ignore[arg-type]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump({"loss": loss, "steps": steps}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
