"""scVI tokenizer: the latent space of an scvi-tools ``SCVI`` model, split into tokens.

The fitted VAE is saved without pickle: its ``state_dict`` goes into ``model.safetensors`` and its
constructor arguments, genes and batch categories into ``config.json``; loading rebuilds
``scvi.module.VAE`` and loads the weights. scvi-tools is imported only when this tokenizer is used.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..data import TARGET_SUM, library_size
from ._base import StandardTokens, check_fitted, register, token_layout
from ._genes import select_genes

LIKELIHOODS = ("nb", "zinb", "poisson")
LIBRARIES = ("source", "generated")


def default_max_epochs(n_cells: int) -> int:
    """scvi-tools' default training length: ``min(400, 20000 / n_cells * 400)`` epochs."""
    return int(min(400, max(1, round(20000 / max(n_cells, 1) * 400))))


def is_scvi_model(obj) -> bool:
    """Whether ``obj`` is a (trained or untrained) ``scvi.model.SCVI`` (without importing scvi)."""
    return type(obj).__name__ == "SCVI" and type(obj).__module__.startswith("scvi")


@register("scvi")
class ScVITokenizer(StandardTokens):
    """scVI posterior latent means as tokens; decoding through the scVI generative model.

    Parameters
    ----------
    n_latent
        Latent dimensions of a newly trained SCVI (default 32).
    n_top_genes
        Highly variable genes scVI models (perturbation targets always kept).
    max_tokens, patch_size
        Token layout: ``patch_size`` latent dimensions per token (default: the smallest that keeps
        ``n_tokens ≤ max_tokens``).
    batch_key
        ``obs`` column with the batch of each cell (scVI's ``batch_key``). It must also be one of
        ``fit``'s ``covariate_keys``, so that generated cells have a batch to decode in.
    max_epochs
        scVI training epochs (default: scvi-tools' rule, ``min(400, 20000 / n_cells * 400)``).
    n_hidden, n_layers, gene_likelihood
        scVI architecture and likelihood (``"nb"`` default, ``"zinb"``, ``"poisson"``).
    accelerator
        Where scVI trains (``"auto"``: a GPU when available).
    model
        An already trained ``scvi.model.SCVI`` to use instead of training one: its genes, batch
        key and latent size are taken from it. Registered covariates other than the batch are
        not supported.
    library
        Library size of generated counts. ``"source"`` (default): each generated cell keeps the
        total counts of its source (or reference) cell. ``"generated"``: the log total counts of
        the modelled genes is one more model feature beside ``z``, so the flow transports it
        with the cell state and :meth:`decode_counts` uses the generated value. Choose it when
        the perturbation itself changes how many counts of these genes a cell has.
    verbose
        Show scVI's progress bar.

    Notes
    -----
    ``prepare`` gives the posterior mean of ``z`` for each cell's counts. ``decode`` returns the
    log1p-normalised NB mean, ``log1p(ρ · 10⁴ · f)`` with ``ρ`` the decoder's normalised mean and
    ``f`` the training share of counts in the modelled genes (1 when all genes are modelled), so
    it matches the log1p of real cells. ``decode_counts`` samples counts from the likelihood with
    a given library size.
    """

    kind = "scvi"
    requires_counts = True
    can_decode_counts = True

    def __init__(self, n_latent: int = 32, n_top_genes: int = 2000, max_tokens: int = 16,
                 patch_size: int | None = None, batch_key: str | None = None,
                 max_epochs: int | None = None, n_hidden: int = 128, n_layers: int = 1,
                 gene_likelihood: str = "nb", accelerator: str = "auto", model=None,
                 library: str = "source", verbose: bool = False):
        if int(n_latent) < 1:
            raise ValueError(f"n_latent must be a positive integer, got {n_latent!r}.")
        if gene_likelihood not in LIKELIHOODS:
            raise ValueError(f"gene_likelihood must be one of {list(LIKELIHOODS)}, got "
                             f"{gene_likelihood!r}.")
        if library not in LIBRARIES:
            raise ValueError(f"library must be one of {list(LIBRARIES)}, got {library!r}.")
        if max_epochs is not None and int(max_epochs) < 1:
            raise ValueError(f"max_epochs must be a positive integer or None, got {max_epochs!r}.")
        if model is not None and not is_scvi_model(model):
            raise TypeError(f"model must be a trained scvi.model.SCVI, got {type(model).__name__}.")
        token_layout(1, max_tokens, patch_size)
        self.n_latent = int(n_latent)
        self.n_top_genes = int(n_top_genes)
        self.max_tokens = int(max_tokens)
        self.fixed_patch = None if patch_size is None else int(patch_size)
        self.batch_key = batch_key
        self.max_epochs = None if max_epochs is None else int(max_epochs)
        self.n_hidden, self.n_layers = int(n_hidden), int(n_layers)
        self.gene_likelihood = gene_likelihood
        self.accelerator = accelerator
        self.library = library
        self.verbose = verbose
        self.pretrained = model
        self.genes: tuple[str, ...] = ()
        self.gene_idx = np.zeros(0, dtype=np.int64)
        self.batch_categories: list[str] = []
        self.module_kwargs: dict[str, Any] = {}
        self.module = None
        self.frac = 1.0
        self.epochs = 0
        self.n_features = self.n_tokens = 0
        self.patch_size = 1
        self.log_library_range = (0.0, float("inf"))
        if model is not None:
            self._read_pretrained(model)

    @property
    def n_genes(self) -> int:
        """Number of genes scVI models."""
        return len(self.genes)

    # ------------------------------------------------------------------ fitting
    def _read_pretrained(self, model) -> None:
        if not getattr(model, "is_trained", False):
            raise ValueError("The scvi.model.SCVI passed as tokenizer is not trained; call "
                             "model.train() first (or pass tokenizer='scvi' to train one).")
        args = model.registry_["setup_args"]
        unsupported = [k for k in ("size_factor_key", "categorical_covariate_keys",
                                   "continuous_covariate_keys") if args.get(k)]
        if unsupported:
            raise ValueError(f"The SCVI model was set up with {unsupported}; scdit supports SCVI "
                             "models with a batch key only. Set it up with batch_key= alone.")
        params = {**model.init_params_.get("non_kwargs", {}),
                  **model.init_params_.get("kwargs", {}).get("kwargs", {})}
        if params.get("dispersion") == "gene-label":
            raise ValueError("SCVI models with dispersion='gene-label' are not supported.")
        if params.get("latent_distribution", "normal") != "normal":
            raise ValueError("Only SCVI models with latent_distribution='normal' are supported.")
        if params.get("gene_likelihood", "zinb") not in LIKELIHOODS:
            raise ValueError(f"SCVI gene_likelihood must be one of {list(LIKELIHOODS)}.")
        fields = model.registry_["field_registries"]
        self.batch_key = args.get("batch_key")
        self.batch_categories = [str(c) for c in
                                 fields["batch"]["state_registry"]["categorical_mapping"]]
        self._pretrained_genes = [str(g) for g in fields["X"]["state_registry"]["column_names"]]
        stats = model.summary_stats
        self.module_kwargs = _json_kwargs({**params, "n_input": int(stats.n_vars),
                                           "n_batch": int(stats.n_batch),
                                           "n_labels": int(stats.n_labels)})
        self.n_latent = int(self.module_kwargs.get("n_latent", 10))
        self.gene_likelihood = self.module_kwargs.get("gene_likelihood", "zinb")
        self.module = copy.deepcopy(model.module).cpu().eval()

    def fit(self, X, var_names: Sequence[str], *, counts=None, obs: pd.DataFrame | None = None,
            required_genes: Sequence[str] = (), seed: int = 0) -> ScVITokenizer:
        """Train scVI on the raw ``counts`` of the selected genes (or adopt the given model).

        ``X`` is the log1p version of ``counts`` (used to select genes); ``obs`` holds
        ``batch_key`` when one is set.
        """
        if counts is None:
            raise ValueError("The scvi tokenizer needs raw counts; the data holds log-normalised "
                             "values. Pass the layer with raw counts: layer='counts'.")
        names = pd.Index([str(v) for v in var_names])
        if self.pretrained is not None:
            missing = [g for g in self._pretrained_genes if g not in names]
            if missing:
                raise ValueError(f"{len(missing)} gene(s) of the SCVI model are not in the data "
                                 f"(e.g. {missing[:5]}); fit scdit on data with the SCVI genes.")
            self.gene_idx = names.get_indexer(self._pretrained_genes).astype(np.int64)
        else:
            self.gene_idx = np.asarray(select_genes(X, names, self.n_top_genes, required_genes),
                                       dtype=np.int64)
        self.genes = tuple(names[self.gene_idx])
        batch = self._batch_labels(obs, counts.shape[0], fitting=self.pretrained is None)
        sub = sp.csr_matrix(counts[:, self.gene_idx], dtype=np.float32)
        total = library_size(counts).sum()
        self.frac = float(library_size(sub).sum() / total) if total > 0 else 1.0
        if self.pretrained is None:
            self._train(sub, batch, seed)
        self.n_features = self.n_latent + (self.library == "generated")
        self.n_tokens, self.patch_size = token_layout(self.n_features, self.max_tokens, self.fixed_patch)
        Z = self.prepare(X, counts, obs)
        self._fit_scale(Z)
        if self.library == "generated":
            self.log_library_range = (float(Z[:, -1].min()), float(Z[:, -1].max()))
        self.pretrained = None  # the module is copied; do not keep the user's model object
        return self

    def _batch_labels(self, obs, n: int, fitting: bool) -> np.ndarray | None:
        if self.batch_key is None:
            return None
        if obs is None or self.batch_key not in obs:
            raise KeyError(f"obs lacks the scVI batch column {self.batch_key!r}.")
        labels = obs[self.batch_key].astype(str).to_numpy()
        if fitting:
            self.batch_categories = sorted(set(labels))
        return labels

    def _train(self, sub: sp.csr_matrix, batch: np.ndarray | None, seed: int) -> None:
        import anndata as ad
        import scvi

        keep = np.flatnonzero(library_size(sub) > 0)  # empty cells break scVI's likelihood
        obs = pd.DataFrame(index=[str(i) for i in keep])
        if batch is not None:
            obs["batch"] = pd.Categorical(batch[keep], categories=self.batch_categories)
        adata = ad.AnnData(X=sub[keep], obs=obs)
        self.epochs = self.max_epochs or default_max_epochs(len(keep))
        if self.verbose:
            print(f"scdit: training scVI on {len(keep)} cells × {sub.shape[1]} genes "
                  f"({self.epochs} epochs, {self.n_latent} latent dimensions)")
        with _quiet(self.verbose):
            scvi.settings.seed = int(seed)
            scvi.model.SCVI.setup_anndata(adata, batch_key="batch" if batch is not None else None)
            model = scvi.model.SCVI(adata, n_latent=self.n_latent, n_hidden=self.n_hidden,
                                    n_layers=self.n_layers, gene_likelihood=self.gene_likelihood)
            model.train(max_epochs=self.epochs, accelerator=self.accelerator, devices=1,
                        enable_progress_bar=self.verbose)
        self.history = {k: [float(v) for v in df.iloc[:, 0].to_numpy()]
                        for k, df in model.history.items() if k in ("elbo_train", "elbo_validation")}
        params = {**model.init_params_["non_kwargs"], **model.init_params_["kwargs"].get("kwargs", {})}
        self.module_kwargs = _json_kwargs({**params, "n_input": int(sub.shape[1]),
                                           "n_batch": int(model.summary_stats.n_batch),
                                           "n_labels": int(model.summary_stats.n_labels)})
        self.module = model.module.cpu().eval()

    # ------------------------------------------------------------------ model input
    def _batch_index(self, obs, n: int) -> torch.Tensor:
        """``(n, 1)`` long batch indices of the cells described by ``obs``."""
        if self.batch_key is None or len(self.batch_categories) <= 1:
            return torch.zeros((n, 1), dtype=torch.long)
        if obs is None or self.batch_key not in obs:
            raise KeyError(f"The scVI decoder needs each cell's batch: pass obs with column "
                           f"{self.batch_key!r} (one of {self.batch_categories[:5]}).")
        labels = pd.Index(self.batch_categories).get_indexer(obs[self.batch_key].astype(str))
        if (labels < 0).any():
            bad = sorted(set(obs[self.batch_key].astype(str).to_numpy()[labels < 0]))
            raise ValueError(f"Unknown {self.batch_key!r} value(s) {bad[:5]}; scVI was trained on "
                             f"{self.batch_categories}.")
        return torch.as_tensor(labels, dtype=torch.long)[:, None]

    @torch.no_grad()
    def prepare(self, X, counts=None, obs: pd.DataFrame | None = None) -> np.ndarray:
        """Posterior means of ``z`` ``(n_cells, n_latent)`` from raw ``counts`` (cells × genes).

        With ``library="generated"`` a last column holds ``log(max(total counts, 1))`` of the
        modelled genes.
        """
        if self.module is None:
            raise RuntimeError("The tokenizer must be fitted before prepare; call fit() first.")
        if counts is None:
            raise ValueError("The scvi tokenizer needs raw counts of the cells to encode.")
        sub = counts[:, self.gene_idx]
        batch = self._batch_index(obs, sub.shape[0])
        out = np.empty((sub.shape[0], self.n_latent + (self.library == "generated")), np.float32)
        for start in range(0, sub.shape[0], 2048):
            chunk = sub[start:start + 2048]
            x = torch.as_tensor(np.asarray(chunk.toarray() if sp.issparse(chunk) else chunk,
                                           dtype=np.float32))
            inf = self.module.inference(x=x, batch_index=batch[start:start + 2048])
            out[start:start + len(x), :self.n_latent] = inf["qz"].loc.cpu().numpy()
        if self.library == "generated":
            out[:, -1] = np.log(np.maximum(library_size(sub), 1.0))
        return out

    # ------------------------------------------------------------------ decoding
    def _generative(self, tokens: torch.Tensor, log_library: torch.Tensor, obs):
        check_fitted(self, "decoding")
        z = self.features(tokens)[:, :self.n_latent]  # (B, n_latent)
        dev = z.device
        self.module.to(dev)
        batch = self._batch_index(obs, len(z)).to(dev)
        y = torch.zeros((len(z), 1), dtype=torch.long, device=dev)
        with torch.no_grad():
            return self.module.generative(z=z, library=log_library.to(dev), batch_index=batch, y=y)["px"]

    def decode(self, tokens: torch.Tensor, obs: pd.DataFrame | None = None) -> torch.Tensor:
        """``(B, T, P)`` → log1p-normalised NB means ``(B, n_genes)``.

        ``obs`` (one row per cell) supplies :attr:`batch_key` when scVI was trained with batches.
        """
        px = self._generative(tokens, torch.zeros((len(tokens), 1)), obs)
        return torch.log1p(px.scale * (TARGET_SUM * self.frac))

    def decode_counts(self, tokens: torch.Tensor, library: torch.Tensor, obs: pd.DataFrame | None = None,
                      generator: np.random.Generator | int | None = None) -> torch.Tensor:
        """Sample counts ``(B, n_genes)`` from scVI's likelihood given each cell's library size.

        Parameters
        ----------
        tokens
            Generated tokens ``(B, T, P)``.
        library
            Total counts of the modelled genes of each cell, ``(B,)`` (e.g. from its source or
            reference cell). Ignored with ``library="generated"``: the generated log library
            (clipped to the range seen in training) is used instead.
        obs
            One row per cell with :attr:`batch_key` (when scVI has batches).
        generator
            NumPy generator or seed for the sampling.
        """
        rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
        if self.library == "generated":
            log_lib = self.generated_log_library(tokens)
        else:
            log_lib = torch.log(torch.as_tensor(np.asarray(library, dtype=np.float32)).clamp_min(1.0))
        px = self._generative(tokens, log_lib[:, None], obs)
        mu = px.mu.double().cpu().numpy() if hasattr(px, "mu") else px.rate.double().cpu().numpy()
        if self.gene_likelihood == "poisson":
            out = rng.poisson(mu)
        else:
            theta = np.broadcast_to(px.theta.double().cpu().numpy(), mu.shape)
            out = rng.poisson(rng.gamma(theta, np.maximum(mu, 1e-12) / theta))
            if self.gene_likelihood == "zinb":
                pi = torch.sigmoid(px.zi_logits).double().cpu().numpy()
                out = np.where(rng.random(mu.shape) < pi, 0, out)
        return torch.as_tensor(out, dtype=torch.float32)

    def generated_log_library(self, tokens: torch.Tensor) -> torch.Tensor:
        """Generated log total counts ``(B,)`` (``library="generated"`` only), clipped to the
        training range."""
        if self.library != "generated":
            raise ValueError("This scVI tokenizer takes library sizes from source cells "
                             "(library='source'); it generates none.")
        lo, hi = self.log_library_range
        return self.features(tokens)[:, -1].float().cpu().clamp(lo, hi)

    # ------------------------------------------------------------------ persistence
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able settings, arrays): the VAE's weights as arrays, its arguments in the meta."""
        check_fitted(self, "state")
        meta = {"kind": self.kind, "n_latent": self.n_latent, "n_top_genes": self.n_top_genes,
                "max_tokens": self.max_tokens, "fixed_patch": self.fixed_patch,
                "batch_key": self.batch_key, "batch_categories": list(self.batch_categories),
                "max_epochs": self.max_epochs, "epochs": self.epochs, "n_hidden": self.n_hidden,
                "n_layers": self.n_layers, "gene_likelihood": self.gene_likelihood,
                "genes": list(self.genes), "frac": self.frac, "module_kwargs": self.module_kwargs,
                "n_features": self.n_features, "n_tokens": self.n_tokens,
                "patch_size": self.patch_size, "library": self.library,
                "log_library_range": (list(self.log_library_range)
                                      if self.library == "generated" else None),
                "scvi_version": _scvi_version()}
        arrays = {"mean": self.mean.numpy(), "std": self.std.numpy(), "gene_idx": self.gene_idx}
        arrays.update({f"module.{k}": v.detach().cpu().numpy()
                       for k, v in self.module.state_dict().items()})
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> ScVITokenizer:
        """Rebuild the fitted tokenizer (and its ``scvi.module.VAE``) from :meth:`state`."""
        from scvi.module import VAE

        tok = cls(meta["n_latent"], meta["n_top_genes"], meta["max_tokens"], meta["fixed_patch"],
                  meta["batch_key"], meta["max_epochs"], meta["n_hidden"], meta["n_layers"],
                  meta["gene_likelihood"], library=meta.get("library", "source"))
        if meta.get("log_library_range"):
            tok.log_library_range = tuple(float(v) for v in meta["log_library_range"])
        tok.batch_categories = list(meta["batch_categories"])
        tok.genes = tuple(meta["genes"])
        tok.frac, tok.epochs = float(meta["frac"]), int(meta.get("epochs", 0))
        tok.module_kwargs = dict(meta["module_kwargs"])
        tok.n_features, tok.n_tokens = int(meta["n_features"]), int(meta["n_tokens"])
        tok.patch_size = int(meta["patch_size"])
        tok.gene_idx = np.asarray(arrays["gene_idx"], np.int64)
        tok.mean = torch.as_tensor(np.asarray(arrays["mean"]), dtype=torch.float32)
        tok.std = torch.as_tensor(np.asarray(arrays["std"]), dtype=torch.float32)
        kwargs = dict(tok.module_kwargs)
        if not kwargs.get("use_observed_lib_size", True):
            shape = np.asarray(arrays["module.library_log_means"]).shape
            kwargs["library_log_means"] = np.zeros(shape, np.float32)
            kwargs["library_log_vars"] = np.ones(shape, np.float32)
        with _quiet(False):
            module = VAE(**kwargs)
        module.load_state_dict({k.split(".", 1)[1]: torch.as_tensor(np.asarray(v))
                                for k, v in arrays.items() if k.startswith("module.")})
        tok.module = module.eval()
        return tok


def _json_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments of the VAE, checked to be JSON-serialisable."""
    out = {k: v for k, v in kwargs.items() if v is not None}
    try:
        json.dumps(out)
    except TypeError as err:
        raise ValueError(f"The SCVI model's arguments cannot be stored as JSON ({err}); scdit "
                         "supports SCVI models built from plain arguments.") from err
    return out


def _scvi_version() -> str:
    from importlib.metadata import version

    return version("scvi-tools")


@contextlib.contextmanager
def _quiet(verbose: bool):
    """Silence scvi-tools' and Lightning's info logs and routine warnings unless ``verbose``."""
    names = ("scvi", "lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.INFO if verbose else logging.ERROR)
    with warnings.catch_warnings():
        if not verbose:
            warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for n, level in levels.items():
                logging.getLogger(n).setLevel(level)
