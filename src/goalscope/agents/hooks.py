"""Hook points: named activation sites on any agent, to record activations and to add to or replace them.

A *site* is a submodule named as in ``model.named_modules()`` (``conv1``, ``fc``, ``reward_map2``...); its
activation is the module's output, taken with a PyTorch forward hook, so every registered architecture and any
user ``nn.Module`` has sites without code of its own. :func:`default_sites` names the sites worth looking at for
each built-in architecture (the pre-nonlinearity output of each layer, in forward order); :func:`all_sites` lists
every leaf module.

    from goalscope.agents import hooks
    with hooks.record(model, ["conv1", "fc"]) as acts:      # record: outputs unchanged
        model(obs)
    acts["fc"]                                              # (batch, 128), concatenated over forward calls

    with hooks.intervene(model, {"fc": hooks.Add(v)}):      # MA + c*v at one site during a rollout
        profile = evaluate(model, env_cfg, reward, 256, seed)   # the same paired episodes as everything else

    with hooks.patch(model, source, ["conv2"]):              # replace a site by another model's activation on the
        profile = evaluate(model, ...)                       # same observation (activation patching)

A module called several times in one forward pass (the planner's ``transition``, once per value-iteration step)
is intervened on at every call; :func:`record` keeps every call, and :func:`mean_activation` averages the last
call of each forward pass (what the heads read). Hooks are always removed on leaving the ``with`` block, also on
error. (``evaluate`` above is :func:`goalscope.rl.evaluation.evaluate`; this module does not import it.)

May import: torch and goalscope.errors (the core helpers); it knows architectures only by class name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from goalscope.errors import ConfigError

__all__ = ["DEFAULT_SITES", "REPEATED_SITES", "all_sites", "default_sites", "repeated_sites", "site_parameters",
           "Add", "Replace", "Toward", "Intervention", "intervene", "record", "patch", "activations",
           "mean_activation"]

# Sites per architecture class name: the output of every layer in forward order. Post-nonlinearity activations are
# computed functionally (torch.relu) in the built-in agents and have no module to hook; the pre-activation is the
# site, as "hook_pre" in TransformerLens. ``policy`` is the logits.
DEFAULT_SITES: dict[str, tuple[str, ...]] = {
    "CNNAgent": ("conv1", "conv2", "conv3", "conv4", "fc", "policy"),
    "MLPAgent": ("fc1", "fc2", "fc3", "pi_fc1", "pi_fc2", "pi_fc3", "policy"),
    "PlannerAgent": ("reward_map1", "reward_map2", "transition", "policy"),
    "NeedlePlannerAgent": ("reward_map1", "reward_map2", "transition", "fc1", "fc2", "policy"),
    "RCNNAgent": ("conv1", "conv2", "conv3", "inject", "recur", "fc", "policy"),
    "PixelRCNNAgent": ("conv1", "locate", "conv2", "conv3", "inject", "recur", "fc", "policy"),
    "NatureCNNAgent": ("conv1", "conv2", "conv3", "fc", "policy"),
    "ImpalaCNNAgent": (*(f"stack{i}.{c}" for i in range(1, 5)
                         for c in ("conv", "res1.conv0", "res1.conv1", "res2.conv0", "res2.conv1")), "fc", "policy"),
}
# Sites called more than once per forward pass in the built-in agents (value-iteration steps, recurrent convs).
REPEATED_SITES = {"PlannerAgent": ("transition",), "NeedlePlannerAgent": ("transition",), "RCNNAgent": ("recur",),
                  "PixelRCNNAgent": ("recur",)}


def all_sites(model: nn.Module) -> list[str]:
    """Every leaf module of ``model`` (no children of its own), by name: each one is a site."""
    return [name for name, m in model.named_modules() if name and not any(True for _ in m.children())]


def default_sites(model: nn.Module) -> list[str]:
    """The layer outputs of a built-in architecture, in forward order; every leaf module for any other model."""
    names = dict(model.named_modules())
    wanted = _by_class(DEFAULT_SITES, model, None)
    if wanted is None:
        return all_sites(model)
    return [s for s in wanted if s in names]


def repeated_sites(model: nn.Module) -> tuple[str, ...]:
    """Sites of a built-in architecture that its forward pass calls more than once (value-iteration steps)."""
    return _by_class(REPEATED_SITES, model, ())


def _by_class(table: dict, model: nn.Module, default):
    """``table``'s entry for ``model``'s class or the nearest base class in it (a subclass such as planted_rcnn's
    keeps its parent's layers)."""
    return next((table[c.__name__] for c in type(model).__mro__ if c.__name__ in table), default)


def _module(model: nn.Module, site: str) -> nn.Module:
    names = dict(model.named_modules())
    if not site or site not in names:
        raise ConfigError(f"no hook site {site!r} in {type(model).__name__} (sites: {', '.join(all_sites(model))})")
    return names[site]


def site_parameters(model: nn.Module, site: str) -> list[str]:
    """Parameter names of the module at ``site`` (its own, recursively): the weight-space side of a site."""
    prefix = site + "."
    return [n for n, _ in model.named_parameters() if n.startswith(prefix)]


# ----------------------------------------------------------------------------------------------------------------
# Interventions


@dataclass
class Add:
    """Add ``vector`` (broadcast over the batch: shaped like one example's activation, or (1, ...)) to the site."""

    vector: torch.Tensor
    scale: float = 1.0

    def __call__(self, out: torch.Tensor, obs: torch.Tensor | None) -> torch.Tensor:
        return out + self.scale * self.vector.to(out.dtype)


@dataclass
class Replace:
    """Replace the site's activation by ``value``: a tensor (broadcast over the batch) or a function of the
    model's input observations returning the activation for that batch."""

    value: torch.Tensor | Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, out: torch.Tensor, obs: torch.Tensor | None) -> torch.Tensor:
        v = self.value(obs) if callable(self.value) else self.value
        return v.to(out.dtype).expand_as(out).clone()


@dataclass
class Toward:
    """Move the site's activation toward ``source``'s activation on the same observation:
    ``out + scale * (act_source(obs) - out)``. scale = 1 is activation patching (the source's activation), scale = -1
    its mirror image (``2 out - act_source``): an input-dependent difference, unlike a fixed :class:`Add` vector."""

    source: nn.Module
    site: str
    scale: float = 1.0

    def __call__(self, out: torch.Tensor, obs: torch.Tensor | None) -> torch.Tensor:
        if obs is None:
            raise ConfigError("Toward needs the model's input; use it through hooks.intervene")
        with torch.inference_mode(), record(self.source, [self.site], last_call_only=True) as acts:
            self.source(obs)
        src = acts[self.site].to(out.dtype)
        if self.scale == 1.0:  # patching: the source's activation itself, bit for bit
            return src.expand_as(out).clone()
        return out + self.scale * (src - out)


Intervention = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@contextlib.contextmanager
def _hooks(model: nn.Module, fns: Mapping[str, Callable], need_obs: bool = False):
    handles = []
    state: dict = {"obs": None}
    try:
        if need_obs:
            def grab(_module, args):
                state["obs"] = args[0] if args else None

            handles.append(model.register_forward_pre_hook(grab))
        for site, fn in fns.items():
            mod = _module(model, site)
            handles.append(mod.register_forward_hook(lambda _m, _i, out, fn=fn: fn(out, state["obs"])))
        yield state
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def intervene(model: nn.Module, edits: Mapping[str, Intervention]):
    """Apply ``edits`` ({site: Add(...) | Replace(...) | fn(out, obs) -> new out}) while inside the block."""
    if not isinstance(edits, Mapping):
        raise ConfigError("intervene needs a mapping {site: intervention}")
    for site, fn in edits.items():
        if not callable(fn):
            raise ConfigError(f"the intervention at site {site!r} is not callable")
        if isinstance(fn, Add) and not torch.isfinite(fn.vector).all():
            raise ConfigError(f"the vector added at site {site!r} has non-finite entries")
    with _hooks(model, dict(edits), need_obs=True):
        yield model


@contextlib.contextmanager
def record(model: nn.Module, sites: Iterable[str] | None = None, last_call_only: bool = False):
    """Record the activation of each site (default: :func:`default_sites`) on every forward pass in the block.

    Yields a dict filled as the model runs: ``{site: tensor}`` concatenated over forward passes along the batch
    axis (a site called k times per pass contributes k chunks per pass, or only the last with
    ``last_call_only``). Tensors are detached float32 copies; outputs are unchanged."""
    sites = list(default_sites(model) if sites is None else sites)
    chunks: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
    pending: dict[str, torch.Tensor | None] = {s: None for s in sites}
    result: dict[str, torch.Tensor] = _LazyActs(chunks)

    def keep(site):
        def fn(out, _obs):
            t = out.detach().float().clone()
            if last_call_only:
                pending[site] = t
            else:
                chunks[site].append(t)
            return None  # a forward hook returning None leaves the output as it is
        return fn

    def flush(_module, _args, _out):
        if last_call_only:
            for s, t in pending.items():
                if t is not None:
                    chunks[s].append(t)
                    pending[s] = None

    with _hooks(model, {s: keep(s) for s in sites}):
        handle = model.register_forward_hook(flush)
        try:
            yield result
        finally:
            handle.remove()


class _LazyActs(dict):
    """A dict whose values are concatenated on first read after new chunks arrive."""

    def __init__(self, chunks):
        super().__init__()
        self._chunks = chunks

    def _cat(self, site):
        c = self._chunks[site]
        if not c:
            raise KeyError(f"site {site!r} recorded nothing (was the model called inside the block?)")
        return torch.cat(c, 0)

    def __getitem__(self, site):
        return self._cat(site)

    def __contains__(self, site):
        return site in self._chunks

    def keys(self):
        return self._chunks.keys()

    def items(self):
        return [(s, self._cat(s)) for s in self._chunks]

    def __iter__(self):
        return iter(self._chunks)

    def __len__(self):
        return len(self._chunks)


@contextlib.contextmanager
def patch(model: nn.Module, source: nn.Module, sites: Iterable[str]):
    """Replace each site's activation by ``source``'s activation at the same site on the same observations
    (``source`` must have that site with the same shape, e.g. MB patched into MA)."""
    sites = list(sites)
    for s in sites:
        _module(source, s)

    with intervene(model, {s: Toward(source, s, 1.0) for s in sites}):
        yield model


@torch.inference_mode()
def activations(model: nn.Module, obs: torch.Tensor, sites: Iterable[str], batch: int = 4096) -> dict[str, torch.Tensor]:
    """Activations of ``sites`` on ``obs`` (last call of a repeated site), batched; {site: (N, ...)}."""
    sites = list(sites)
    was = model.training
    model.eval()
    try:
        with record(model, sites, last_call_only=True) as acts:
            for i in range(0, len(obs), batch):
                model(obs[i:i + batch])
        return {s: acts[s] for s in sites}
    finally:
        model.train(was)


def mean_activation(model: nn.Module, obs: torch.Tensor, sites: Iterable[str]) -> dict[str, torch.Tensor]:
    """Mean activation of each site over ``obs``, shaped like one example's activation."""
    return {s: a.mean(0) for s, a in activations(model, obs, sites).items()}
