"""Fit a quality-suite setting with extra scdit.fit arguments and save it (session 14, issue 17).

Usage, from the repository root: python benchmarks/archive/seen_variants_fit.py SETTING SEED "{'max_steps': 12000}" TAG
"""
import os, sys, time, argparse
OUT = os.environ.get("OUT", ".")  # models are saved under OUT/models
sys.path.insert(0, "benchmarks")
import scdit
from suites.quality import settings
name, seed, extra, tag = sys.argv[1], int(sys.argv[2]), eval(sys.argv[3]), sys.argv[4]
st = settings()[name]
task = st.make(st.holdouts[0], False, argparse.Namespace())
t0 = time.time()
m = scdit.fit(task.train, st.condition_key, control=st.control, covariate_keys=(st.covariate_key,) if st.covariate_key else (), seed=seed, verbose=False, **extra)
print("fit", time.time() - t0, m.summary.get("steps"), flush=True)
m.save(f"{OUT}/models/{name}{tag}_s{seed}")
