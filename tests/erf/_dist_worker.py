"""Run by test_run.py under torchrun: one ERF run of the fixture model, split over the processes."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _erf_helpers import fixture_model  # noqa: E402

from erftools.erf.run import run_erf  # noqa: E402
from erftools.images import select_images  # noqa: E402

golden, out, size, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rec = run_erf(fixture_model(golden), select_images(None, n, "random", seed=0, size=size), out, device="cpu",
              progress=False, batch_size=2)
assert rec["complete"] and rec["num_images"] == n, rec
