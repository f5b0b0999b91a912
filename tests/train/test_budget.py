"""Training length: data-size rule and the wall-time budget that keeps the schedule whole."""

from __future__ import annotations

import types

import numpy as np
import pytest

import scdit
from scdit.train import TimeBudget, _budget


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _run(cb: TimeBudget, clock: _Clock, module, trainer, seconds_per_step: float, n: int):
    cb.on_train_start(trainer, module)
    for step in range(1, n + 1):
        clock.t += seconds_per_step
        trainer.global_step = step
        cb.on_train_batch_end(trainer, module, None, None, step - 1)
        if step >= module.max_steps:
            return step
    return n


def _stubs(max_steps: int, broadcast=lambda obj, src=0: obj):
    """A module and a one-process trainer (``broadcast``: what rank 0 decides)."""
    module = types.SimpleNamespace(max_steps=max_steps)
    trainer = types.SimpleNamespace(global_step=0, fit_loop=types.SimpleNamespace(
        epoch_loop=types.SimpleNamespace(max_steps=max_steps)), is_global_zero=True,
        strategy=types.SimpleNamespace(broadcast=broadcast))
    return module, trainer


def test_time_budget_shortens_a_run_that_would_overrun(monkeypatch, capsys):
    clock = _Clock()
    monkeypatch.setattr(_budget.time, "perf_counter", clock)
    module, trainer = _stubs(4000)
    cb = TimeBudget(minutes=1.0, verbose=True)  # 60 s at 0.1 s/step: ~540 fit in 90 % of it
    ran = _run(cb, clock, module, trainer, 0.1, 4000)
    assert "would overrun the 1-minute budget" in capsys.readouterr().out
    assert cb.shortened_to is not None and 500 <= cb.shortened_to <= 600
    assert module.max_steps == trainer.fit_loop.epoch_loop.max_steps == cb.shortened_to
    assert ran == cb.shortened_to and clock.t <= 60.0


def test_time_budget_leaves_a_run_that_fits_alone(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(_budget.time, "perf_counter", clock)
    module, trainer = _stubs(1000)
    cb = TimeBudget(minutes=10.0)
    _run(cb, clock, module, trainer, 0.1, 1000)  # 100 s of 600
    assert cb.shortened_to is None and module.max_steps == 1000


def test_time_budget_adapts_when_steps_slow_down(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(_budget.time, "perf_counter", clock)
    module, trainer = _stubs(3000)
    cb = TimeBudget(minutes=5.0)  # 300 s: 3000 steps at 0.05 s fit at first...
    cb.on_train_start(trainer, module)
    for step in range(1, 3001):
        clock.t += 0.05 if step < 1000 else 0.5  # ...then the machine gets 10x slower
        trainer.global_step = step
        cb.on_train_batch_end(trainer, module, None, None, step - 1)
        if step >= module.max_steps:
            break
    assert cb.shortened_to is not None and module.max_steps < 3000
    assert clock.t <= 300.0


def test_time_budget_follows_rank_zero(monkeypatch):
    """With several processes every one takes rank 0's decision, whatever its own clock says."""
    clock = _Clock()
    monkeypatch.setattr(_budget.time, "perf_counter", clock)
    seen = []

    def rank_zero_says(obj, src=0):  # this (fast) process would fit; rank 0 is slower
        seen.append(obj)
        return 700

    module, trainer = _stubs(1000, broadcast=rank_zero_says)
    cb = TimeBudget(minutes=10.0)
    _run(cb, clock, module, trainer, 0.1, 1000)  # 100 s of 600: fits here
    assert seen[0] is None  # its own decision: keep the length
    assert cb.shortened_to == module.max_steps == trainer.fit_loop.epoch_loop.max_steps == 700


def test_fit_records_the_budget(counts_adata, tiny):
    model = scdit.fit(counts_adata, "condition", max_steps=20, **tiny)
    assert "budget_steps" in model.summary and model.summary["budget_steps"] is None


@pytest.mark.parametrize("source,held_out,n_cells,expected", [
    ("noise", True, 2875, 4000), ("noise", True, 10_240, 5200), ("noise", False, 15_754, 8000),
    ("noise", False, 200_000, 8000), ("control", True, 4500, 300),
    ("control", True, 100_000, 2000), ("control", False, 4500, 1200),
    ("control", False, 10_240, 2400), ("control", False, 100_000, 8000)])
def test_auto_max_steps_by_source_and_design(source, held_out, n_cells, expected):
    from scdit.train import auto_max_steps

    assert auto_max_steps(n_cells, 256, source=source, held_out_contexts=held_out) == expected


def test_contexts_lacking_perturbations():
    from scdit.train import contexts_lacking_perturbations as lacking

    labels = np.array(["c", "A", "B", "c", "A", "B", "c", "A"])
    context = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    assert lacking(labels, context, "c") == 1  # context 2 has control cells, no B
    assert lacking(labels[:6], context[:6], "c") == 0  # a complete design
    # a context without control cells is not a held-out context (nothing to transport)
    assert lacking(np.array(["c", "A", "B", "A"]), np.array([0, 0, 0, 1]), "c") == 0
    assert lacking(labels, np.zeros(8, int), "c") == 0  # no covariates: one context
    # combinations are order-free: B+A in one context is A+B in the other
    assert lacking(np.array(["c", "A+B", "c", "B+A"]), np.array([0, 0, 1, 1]), "c") == 0
    assert lacking(np.array(["c", "A+B", "c", "A"]), np.array([0, 0, 1, 1]), "c") == 2


def test_fit_chooses_the_control_source_schedule_from_the_design(counts_adata):
    """Control source: a held-out context (control cells only) keeps the short schedule that
    transfers; a complete design gets the longer one; both use source noise 0.1; a given
    source_noise is kept."""
    held = counts_adata[~((counts_adata.obs["cell_type"] == "B")
                          & (counts_adata.obs["condition"] == "G1"))].copy()
    kw = dict(covariate_keys=["cell_type"], source="control", max_steps=2, preset="tiny",
              verbose=False)
    m_held = scdit.fit(held, "condition", **kw)
    m_full = scdit.fit(counts_adata, "condition", **kw)
    assert m_held.summary["contexts_lacking_perturbations"] == 1
    assert m_full.summary["contexts_lacking_perturbations"] == 0
    assert m_held.config.flow.source_noise == m_full.config.flow.source_noise == 0.1
    kept = scdit.fit(counts_adata, "condition", flow=scdit.FlowConfig(source_noise=0.3), **kw)
    assert kept.config.flow.source_noise == 0.3
    noise = scdit.fit(counts_adata, "condition", source="noise", max_steps=2, preset="tiny",
                      verbose=False)
    assert noise.config.flow.source_noise == 0.5  # unused there; the value stored before


def test_fit_chooses_the_time_sampling_from_the_design(counts_adata, monkeypatch):
    """Uniform training times for a control source with a held-out context, logit-normal for a
    complete design and for a noise source; the resolved value is stored and is the one the
    training module draws from; a given value is kept."""
    from scdit.train import _module

    used = []
    real = _module.get_time_sampler

    def spy(name, **kw):
        used.append(name)
        return real(name, **kw)

    monkeypatch.setattr(_module, "get_time_sampler", spy)
    held = counts_adata[~((counts_adata.obs["cell_type"] == "B")
                          & (counts_adata.obs["condition"] == "G1"))].copy()
    kw = dict(max_steps=2, preset="tiny", verbose=False)
    ctrl = dict(covariate_keys=["cell_type"], source="control", **kw)
    fitted = [scdit.fit(held, "condition", **ctrl), scdit.fit(counts_adata, "condition", **ctrl),
              scdit.fit(counts_adata, "condition", source="noise", **kw),
              scdit.fit(held, "condition", flow={"time_sampling": "logit_normal"}, **ctrl)]
    stored = [m.config.flow.time_sampling for m in fitted]
    assert stored == ["uniform", "logit_normal", "logit_normal", "logit_normal"]
    assert used == stored
    assert scdit.train.default_time_sampling("control", True) == "uniform"
    assert scdit.train.default_time_sampling("noise", True) == "logit_normal"


def test_model_files_without_a_source_noise_load_with_the_old_default():
    from scdit import DataConfig, ScDiTConfig

    d = ScDiTConfig(data=DataConfig(condition_key="condition", control="ctrl")).to_dict()
    for old in (d["flow"].pop("source_noise"), None):
        if old is None:
            d["flow"]["source_noise"] = None
        assert ScDiTConfig.from_dict(d).flow.source_noise == 0.5
    d["flow"].pop("time_sampling")  # files written before the automatic choice
    assert ScDiTConfig.from_dict(d).flow.time_sampling == "logit_normal"


def test_fit_passes_the_design_to_the_automatic_length(counts_adata, monkeypatch):
    from scdit.train import _trainer

    seen = []

    def fake(n_cells, batch_size, source, held_out_contexts):
        seen.append((source, held_out_contexts))
        return 2

    monkeypatch.setattr(_trainer, "auto_max_steps", fake)
    held = counts_adata[~((counts_adata.obs["cell_type"] == "B")
                          & (counts_adata.obs["condition"] == "G1"))].copy()
    for adata in (held, counts_adata):
        scdit.fit(adata, "condition", covariate_keys=["cell_type"], source="control",
                  preset="tiny", verbose=False)
    assert seen == [("control", True), ("control", False)]


def test_fit_reports_a_run_cut_by_the_hard_time_limit(counts_adata, tiny):
    """A budget too short even for the step-50 probe: the hard limit ends the run, and the
    summary and a warning say so (a schedule cut mid-way is not a normal fit)."""
    with pytest.warns(RuntimeWarning, match="minute limit after"):
        model = scdit.fit(counts_adata, "condition", max_steps=100_000, max_minutes=0.002, **tiny)
    s = model.summary
    assert s["stopped_by_time"] and s["steps"] < 50 and s["budget_steps"] is None


def test_fit_shortens_a_run_to_its_time_budget(counts_adata, tiny):
    # budget 30 s: the step-50 probe must come before it even on a heavily loaded machine (12 s
    # did not, once, with five CPU-bound jobs on two cores; 3 s never did under load)
    model = scdit.fit(counts_adata, "condition", max_steps=100_000, max_minutes=0.5, **tiny)
    s = model.summary
    assert s["budget_steps"] is not None and s["budget_steps"] < 100_000
    assert not s["stopped_by_time"]
    assert s["steps"] <= s["budget_steps"] and s["seconds"] < 90


def test_model_files_without_a_pairing_load_with_what_their_version_did():
    from scdit import DataConfig, FlowConfig, ScDiTConfig

    for source, old in (("noise", "independent"), ("control", "ot"), ("auto", "ot")):
        d = ScDiTConfig(data=DataConfig(condition_key="condition", control="ctrl"),
                        flow=FlowConfig(source=source)).to_dict()
        assert d["flow"].pop("pairing") == "ot"  # today's default, whatever the source
        assert ScDiTConfig.from_dict(d).flow.pairing == old
    d.pop("flow")  # a configuration without the section takes the defaults
    assert ScDiTConfig.from_dict(d).flow.pairing == "ot"
