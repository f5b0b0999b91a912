"""``benchmarks/run.py`` with the training pairing of every fit forced (session 34, issue #17):
the same suite run with ``FlowConfig.pairing`` "ot" or "independent" for the before/after
comparison of noise-source settings (the suites do not expose the field).

Usage, from the repository root:
  python benchmarks/archive/run_forced_pairing.py ind|ot quality --settings norman_seen --seeds 0
Exploratory code.
"""
import sys, runpy
mode = sys.argv.pop(1)
from scdit.train import _module as M
orig = M.FlowModule.__init__
def init(self, *a, **k):
    k["pairing"] = "independent" if mode == "ind" else "ot"
    orig(self, *a, **k)
M.FlowModule.__init__ = init
sys.argv = ["benchmarks/run.py"] + sys.argv[1:]
sys.path.insert(0, "benchmarks")
runpy.run_path("benchmarks/run.py", run_name="__main__")
