"""Held-out glioblastoma patients with control-source fit variants (session 15 experiment;
usage: patient_schedule.py TAG 'fit-kwargs' PATIENT...; seed 0; writes /tmp/c/gpat_TAG_PATIENT.csv)."""
import sys, time, argparse
sys.path.insert(0, "benchmarks")
import anndata as ad, pandas as pd
import scdit
from suites.quality import settings
tag, extra, patients = sys.argv[1], eval(sys.argv[2]), sys.argv[3:]
st = settings()["glioblastoma_patients"]
rows = []
for p in patients:
    task = st.make(p, False, argparse.Namespace())
    t0 = time.time()
    m = scdit.fit(task.train, st.condition_key, control=st.control,
                  covariate_keys=(st.covariate_key,), seed=0, verbose=False, **extra)
    tf = time.time() - t0
    parts = task.parts or ((task.source, task.n_cells),)
    frames = []
    for method, kw in (("default", {}), ("generator", {"effects": "none"})):
        cells = []
        for i, (src, n) in enumerate(parts):
            for j, c in enumerate(sorted(n)):
                cells.append(m.predict(c, n_cells=n[c], source=src, seed=1000 * i + j, verbose=False, **kw))
        out = ad.concat(cells, merge="same"); out.obs_names_make_unique()
        df = scdit.evaluate(out, task.real, st.condition_key, control=st.control, train=task.train,
                            covariate_key=st.covariate_key, seed=0,
                            baselines=("context_shift", "context_estimate") if not frames else (), method_name=method)
        frames.append(df if not frames else df[df["method"] == method])
    full = pd.concat(frames, ignore_index=True); full["patient"] = p
    full.to_csv(f"/tmp/c/gpat_{tag}_{p}.csv", index=False)
    t = scdit.evaluate.summarize(full)
    cols = [c for c in ("pearson_delta", "pearson_delta_de", "energy_distance") if c in t.columns]
    print(p, "fit", round(tf), "s steps", m.summary.get("steps"), flush=True)
    print(t[cols].round(3).to_string(), flush=True)
