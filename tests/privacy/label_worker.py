"""A labelling run for the kill test: prints every label as it is released, slowly."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.privacy.test_labeler import make_labeler, query_images


def main() -> None:
    ledger_path, count = Path(sys.argv[1]), int(sys.argv[2])
    labeler = make_labeler(ledger_path)
    images = query_images(count)
    for index in range(count):
        result = labeler.label([index], images[index : index + 1])
        print(f"{index} {int(result.labels[0])}", flush=True)  # released
        time.sleep(0.02)


if __name__ == "__main__":
    main()
