"""The generator alone of a saved quality-suite model with and without the match of its decoded
mean to its mean before clipping at 0, at fixed guidance scales (session 22, issue #17).

Usage, from the repository root:
  python benchmarks/archive/generator_clipping_eval.py SETTING MODEL_DIR 1,1.25 [plain,match]
``plain``: decoded as generated (clipped at 0; the package before session 22); ``match``: one
shift per gene before clipping so that the decoded mean is the generated one (run at the time
on the code before session 22 through this script's patch of the decode; the package does it
since). Exploratory code (not a maintained suite).
"""
import sys, argparse
sys.path.insert(0, "benchmarks")
import anndata as ad, pandas as pd, torch, scdit
from scdit.tokenizers import _genes
from scdit.model import _targets
from suites.quality import settings
torch.set_num_threads(1)
name, path = sys.argv[1], sys.argv[2]
scales = [float(s) for s in sys.argv[3].split(",")]
modes = sys.argv[4].split(",") if len(sys.argv) > 4 else ["plain", "match"]
st = settings()[name]; task = st.make(st.holdouts[0], False, argparse.Namespace())
model = scdit.load(path)
parts = task.parts or ((task.source, task.n_cells),)
orig = _genes.GeneTokenizer.decode
MODE = {"m": "plain"}
_targets.EffectTargets.match_clipped = lambda self, x0, cov_df: x0  # the package's own match off


def dec(self, tokens, obs=None):
    if MODE["m"] == "match":
        tokens = self.match_decoded_mean(tokens)
    return orig(self, tokens, obs)
_genes.GeneTokenizer.decode = dec
frames = []
for mode in modes:
    MODE["m"] = mode
    for g in scales:
        cells = []
        for i, (src, n) in enumerate(parts):
            for j, c in enumerate(sorted(n)):
                cells.append(model.predict(c, n_cells=n[c], source=src, seed=1000 * i + j, verbose=False, effects="none", sampling=scdit.SamplingConfig(guidance_scale=g)))
        out = ad.concat(cells, merge="same"); out.obs_names_make_unique()
        df = scdit.evaluate(out, task.real, st.condition_key, baselines=() if frames else ("seen_mean",), method_name=f"{mode}_g{g}", control=st.control, train=task.train, covariate_key=st.covariate_key, seed=0)
        frames.append(df); print(mode, g, flush=True)
t = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
print(t[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(4).to_string())
