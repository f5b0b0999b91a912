"""The guidance scale `fit` would choose (`scdit.model.calibrate_seen_guidance`) for saved models
(session 21, issue #17).

Usage: python benchmarks/archive/calibrate_saved.py MODEL_DIR [MODEL_DIR ...]
"""
import sys, time, torch, scdit
from scdit.model import calibrate_seen_guidance
torch.set_num_threads(1)
for p in sys.argv[1:]:
    m = scdit.load(p); t0 = time.time()
    print(p.split("/")[-1], calibrate_seen_guidance(m), round(time.time() - t0, 1), "s", flush=True)
