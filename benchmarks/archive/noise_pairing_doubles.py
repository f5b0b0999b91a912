"""Norman doubles: a default fit whose noise draws are re-paired with the cells by minibatch
OT within (context, condition) groups, scored as default and generator alone (session 34,
issue #17; what became ``FlowConfig(pairing="ot")``).

The session's runs patched ``FlowModule._source`` (before the field existed) with exactly what
``pairing="ot"`` now does for a noise source; on this scdit the patch is the default and
``independent`` forces the old pairing. Fits and saves to MODEL_DIR (or loads it), then
scores with ``doubles_generator_variants.py`` (the quality suite's split, source cells and
prediction seeds).

Usage, from the repository root:
  python benchmarks/archive/noise_pairing_doubles.py MODEL_DIR SEED [ot|independent]
Exploratory code.
"""
import sys
sys.path.insert(0, "benchmarks"); sys.path.insert(0, "benchmarks/archive")
from scdit.train import _module as M

mode = sys.argv[3] if len(sys.argv) > 3 else "ot"
_init = M.FlowModule.__init__
def _forced(self, *a, **k):
    k["pairing"] = mode
    _init(self, *a, **k)
M.FlowModule.__init__ = _forced

import doubles_generator_variants as D
D.main(sys.argv[1], {"default": {}, "gen": {"generator_only": True}}, seed=int(sys.argv[2]))
