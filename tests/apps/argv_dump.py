"""Writes its argv (without the program name) as JSON to ``$HSM_TASK_DIR/argv.json``.

Arguments that are not UTF-8 are kept as their bytes with surrogate escapes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

if __name__ == "__main__":
    out = Path(os.environ["HSM_TASK_DIR"]) / "argv.json"
    out.write_text(json.dumps(sys.argv[1:], ensure_ascii=True), encoding="utf-8")
