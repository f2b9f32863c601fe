"""Experiment specs: one TOML file, validated into dataclasses before anything runs.

Every section is a dataclass; unknown keys and wrong types are errors that name the key (``finetune.stepz``).
See ``experiments/default.toml`` for a commented example of every field.

May import: goalscope.agents, goalscope.envs, goalscope.errors, goalscope.inputs, goalscope.rl, goalscope.signals.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from goalscope.agents.registry import arch_config, arch_config_to_json, build_agent
from goalscope.envs import ENV_FAMILIES, env_from_json
from goalscope.envs.maze import MazeConfig
from goalscope.envs.rewards import (Reward, composite_family, mixture_family, one_hot_family, parse_mixture, parse_reward,
                                    type_names)
from goalscope.envs.events import trust_modules, with_default_count
from goalscope.errors import ConfigError, GoalscopeError
from goalscope.inputs import (MAX_EPISODE_STEPS, MAX_JOBS, MAX_RANDOM_DIRECTIONS, MAX_SEEDS_PER_MA, MAX_STEPS,
                              check_model_size, check_ppo_sizes, int_field, read_toml)
from goalscope.rl.ppo import PPOConfig, resolve_precision


@dataclass(frozen=True)
class AgentSection:
    """``[agent]``: the architecture and its options."""
    arch: str = "cnn"
    config: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BaseSection:
    """``[base]``: RA and the training budget of MA."""
    reward: str = "collect:0"  # RA
    steps: int = 300_000
    # Plant the objective by training (an architecture with a planted part, e.g. planted_rcnn): MA is first trained
    # on this reward (e.g. "1,1,1,1,1": every type alike, a navigator with no preference) for pretrain_steps, then
    # on RA for `steps` with only the planted part free to move. "" = no pretraining.
    pretrain_reward: str = ""
    pretrain_steps: int = 0


@dataclass(frozen=True)
class FinetuneSection:
    # RBs: explicit reward strings, or the families "one_hot" (every other type alone), "composite" (RA plus
    # each other type as a new component) and "mixture[+][:N[:SEED]]" (N dense random weight vectors over all
    # types; "+" for non-negative ones).
    """``[finetune]``: the RBs (or reward families), the budget and fine-tune seeds per MA."""
    rewards: list[str] = field(default_factory=lambda: ["one_hot"])
    steps: int = 100_000
    # Fine-tune seeds per RB (and per control) for every MA seed. Stability of a per-parameter ranking is only
    # meaningful between fine-tunes of the same MA (units of independently initialised networks do not line up),
    # so >= 2 gives the within-MA stability test; the first fine-tune seed is the MB used everywhere else.
    seeds_per_ma: int = 1


@dataclass(frozen=True)
class ControlsSection:
    """``[controls]``: which control models to train alongside the MBs."""
    continue_ra: bool = True  # MA fine-tuned on RA itself for the same budget: pure continued-training drift
    other_seed: bool = False  # MA' trained on RA from another seed: how different two solutions to RA are


@dataclass(frozen=True)
class NegateSection:
    """``[negate]``: negate-and-retrain step sizes, retraining budget and random-direction controls."""
    enabled: bool = True
    alphas: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    retrain_steps: int = 20_000
    random_control: bool = True  # MA - alpha*r, r random with Δ's per-tensor norms, retrained alike
    random_directions: int = 3  # fresh random directions per (seed, RB, alpha); their mean is the control


@dataclass(frozen=True)
class SuperposeSection:
    """``[superpose]``: the aggregators to run and the Fisher's sample size."""
    methods: list[str] = field(default_factory=lambda: ["mean", "median", "mean_abs", "ties", "pca", "control_subtracted", "fisher"])
    fisher_samples: int = 1024


@dataclass(frozen=True)
class EvaluationSection:
    """``[evaluation]``: episodes, seed, bootstrap resamples and the competence bar."""
    episodes: int = 256
    seed: int = 10_000
    bootstrap: int = 2000  # bootstrap resamples for confidence intervals
    # The competence gate (goalscope.analysis.effects.competence): MA below `competence` of the oracle on RA, or an MB below
    # `competence_mb` on its RB, is flagged. An MB starts from MA and keeps improving its navigation, so it ends
    # near MA's level; its bar sits a little lower because its budget is a fraction of MA's.
    competence: float = 0.9
    competence_mb: float = 0.85


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment, validated: seeds, env, agent, PPO settings and each stage's section."""
    name: str = "experiment"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    workers: int = 0  # parallel job processes; 0 = one per CPU core
    env: MazeConfig = field(default_factory=MazeConfig)  # or any family in goalscope.envs.ENV_FAMILIES
    agent: AgentSection = field(default_factory=AgentSection)
    ppo: dict = field(default_factory=dict)  # PPO settings shared by every job (the budgets live in the sections)
    base: BaseSection = field(default_factory=BaseSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    controls: ControlsSection = field(default_factory=ControlsSection)
    negate: NegateSection = field(default_factory=NegateSection)
    superpose: SuperposeSection = field(default_factory=SuperposeSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)

    # -- derived values ----------------------------------------------------------------------------------------
    @property
    def ra(self) -> Reward:
        return parse_reward(self.base.reward, self.env.n_types, type_names(self.env))

    @property
    def pretrain(self) -> Reward | None:
        """The reward MA is pretrained on before RA, where the objective is planted by training (else None)."""
        spec = self.base.pretrain_reward
        return parse_reward(spec, self.env.n_types, type_names(self.env)) if spec else None

    def rbs(self) -> list[Reward]:
        out: list[Reward] = []
        for spec in self.finetune.rewards:
            if spec == "one_hot":
                out += one_hot_family(self.env.n_types, exclude=self.ra, names=type_names(self.env))
            elif spec == "composite":
                out += composite_family(self.ra, self.env.n_types, names=type_names(self.env))
            elif (mix := parse_mixture(spec)) is not None:
                out += mixture_family(self.env.n_types, *mix)
            else:
                out.append(parse_reward(spec, self.env.n_types, type_names(self.env)))
        names = [r.name for r in out]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"finetune.rewards lists {sorted(dup)[0]!r} twice")
        return out

    def ppo_config(self, steps: int) -> PPOConfig:
        for key in ("total_steps", "eval_episodes"):
            if key in self.ppo:
                raise ConfigError(f"ppo.{key} is set by the experiment (base/finetune/negate steps, evaluation.episodes)")
        return PPOConfig.from_json({**self.ppo, "total_steps": steps, "eval_episodes": self.evaluation.episodes})

    def validate(self) -> "ExperimentConfig":
        """Check everything that only shows when values are combined, so errors come before any training."""
        from goalscope.signals import aggregators as aggregate

        self.ra
        rbs = self.rbs()
        if not rbs:
            raise ConfigError("finetune.rewards gives no reward to fine-tune on")
        if any(rb.weights == self.ra.weights and rb.step_cost == self.ra.step_cost for rb in rbs):
            raise ConfigError("finetune.rewards contains RA itself; RA is covered by controls.continue_ra")
        arch_config(self.agent.arch, self.agent.config)
        self._check_pretrain()
        for steps, key in ((self.base.steps, "base.steps"), (self.finetune.steps, "finetune.steps"), (self.negate.retrain_steps, "negate.retrain_steps")):
            if steps < 1:
                raise ConfigError(f"{key} must be positive, got {steps}")
            self.ppo_config(steps)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError("seeds must be a non-empty list of distinct non-negative integers")
        if self.evaluation.seed < 0:
            raise ConfigError(f"evaluation.seed must be >= 0, got {self.evaluation.seed}")
        if self.ra.cued or any(rb.cued for rb in rbs):
            raise ConfigError("'cued' rewards need per-episode cues; use `goalscope pointers` for that experiment")
        if self.finetune.seeds_per_ma < 1 or self.negate.random_directions < 1:
            raise ConfigError("finetune.seeds_per_ma and negate.random_directions must be >= 1")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        for a in self.negate.alphas:
            if not math.isfinite(a) or a <= 0:
                raise ConfigError(f"negate.alphas must be positive numbers, got {a}")
        for m in self.superpose.methods:
            try:
                aggregate.get(m)
            except GoalscopeError as e:
                raise ConfigError(f"superpose.methods: {e}") from None
        if "control_subtracted" in self.superpose.methods and not self.controls.continue_ra:
            raise ConfigError("superpose.methods has 'control_subtracted' but controls.continue_ra is false")
        if self.evaluation.episodes < 2 or self.evaluation.bootstrap < 100:
            raise ConfigError("evaluation.episodes must be >= 2 and evaluation.bootstrap >= 100")
        self._check_bounds()
        return self

    def _check_pretrain(self) -> None:
        base, planted_by_training = self.base, self.agent.arch == "planted_rcnn"
        if not base.pretrain_reward:
            if planted_by_training:
                raise ConfigError("agent.arch 'planted_rcnn' plants its objective by training: set "
                                  "base.pretrain_reward (e.g. \"1,1,1,1,1\") and base.pretrain_steps")
            return
        if not planted_by_training:
            raise ConfigError(f"base.pretrain_reward needs an architecture whose planted part is trained, such as "
                              f"'planted_rcnn'; agent.arch is {self.agent.arch!r}")
        if self.pretrain.weights == self.ra.weights:
            raise ConfigError("base.pretrain_reward is RA itself: pretrain on a reward with no type preference")
        int_field(base.pretrain_steps, "base.pretrain_steps", 1, MAX_STEPS)

    def _check_bounds(self) -> None:
        """Upper bounds on every number that sizes work, so a typo fails now instead of after hours of training
        (``bootstrap = 10**12`` used to crash the analysis after every job had run) or by exhausting memory."""
        for key, value, hi in (("base.steps", self.base.steps, MAX_STEPS), ("finetune.steps", self.finetune.steps, MAX_STEPS),
                               ("negate.retrain_steps", self.negate.retrain_steps, MAX_STEPS),
                               ("evaluation.episodes", self.evaluation.episodes, 100_000),
                               ("evaluation.bootstrap", self.evaluation.bootstrap, 100_000),
                               ("evaluation.seed", self.evaluation.seed, 2**32 - 1),
                               ("superpose.fisher_samples", self.superpose.fisher_samples, 1_000_000),
                               ("workers", self.workers, 1024), ("number of seeds", len(self.seeds), 1000)):
            int_field(value, key, 0, hi)
        for s in self.seeds:
            int_field(s, "seeds[]", 0, 2**32 - 1)
        for key in ("competence", "competence_mb"):
            if not 0 < getattr(self.evaluation, key) <= 2:
                raise ConfigError(f"evaluation.{key} must be a fraction of the oracle in (0, 2], "
                                  f"got {getattr(self.evaluation, key)}")
        if len(self.rbs()) > 1000:
            raise ConfigError(f"finetune.rewards gives {len(self.rbs())} rewards; at most 1000 are supported")
        int_field(self.finetune.seeds_per_ma, "finetune.seeds_per_ma", 1, MAX_SEEDS_PER_MA)
        int_field(self.negate.random_directions, "negate.random_directions", 1, MAX_RANDOM_DIRECTIONS)
        int_field(getattr(self.env, "max_steps", 1), "env.max_steps", 1, MAX_EPISODE_STEPS)
        int_field(len(self.negate.alphas), "number of negate.alphas", 0, 1000)
        env = self.env
        check_ppo_sizes(self.ppo_config(self.base.steps), env.obs_shape)  # before any rollout buffer is allocated
        n, rbs = len(self.seeds), len(self.rbs())
        n_random = self.negate.random_directions if self.negate.random_control else 0
        jobs = (n * (1 + bool(self.controls.other_seed)) + n * self.finetune.seeds_per_ma * (rbs + 1)
                + (n * (1 + rbs * len(self.negate.alphas) * (1 + n_random)) if self.negate.enabled else 0))
        if jobs > MAX_JOBS:
            raise ConfigError(f"the experiment would plan {jobs:,} jobs, more than the limit of {MAX_JOBS:,}; use fewer "
                              "seeds, rewards, alphas or random directions")
        make = lambda: build_agent(self.agent.arch, env.obs_shape, env.n_actions, self.agent.config)  # noqa: E731
        check_model_size(make, f"agent (architecture {self.agent.arch!r})")

    def to_json(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_json() if isinstance(v, tuple(ENV_FAMILIES.values())) else (
                {g.name: getattr(v, g.name) for g in fields(v)} if hasattr(v, "__dataclass_fields__") else v)
        out["agent"]["config"] = arch_config_to_json(arch_config(self.agent.arch, self.agent.config))
        return out


def _coerce(value, tp, key: str):
    """Check ``value`` against the annotation ``tp``; return it (lists converted), or raise naming ``key``."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp in (bool, str, dict):
        if not isinstance(value, tp):
            raise ConfigError(f"{key} must be {tp.__name__}, got {value!r}")
        return value
    if tp in ENV_FAMILIES.values():
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table, got {value!r}")
        return env_from_json(value)
    if hasattr(tp, "__dataclass_fields__"):
        return _section(tp, value, key)
    raise TypeError(f"unsupported config annotation {tp!r}")


def _section(cls, data, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"unknown key {where!r} (known in {prefix or 'the top level'}: {', '.join(sorted(known))})")
    values = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**values)


def load_experiment(path: str | Path) -> ExperimentConfig:
    """An experiment TOML file, validated. It is the user's own, so an env id it names as ``module:Env`` may import
    that module (a checkpoint or run directory naming one may not; see ``envs.events.trust_modules``)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"experiment file {str(path)!r} does not exist")
    data = file_defaults(read_toml(path))
    env = data.get("env")
    if isinstance(env, dict) and isinstance(env.get("id"), str) and ":" in env["id"]:
        trust_modules([env["id"].split(":", 1)[0]])
    return experiment_from_dict(data)


def file_defaults(data: dict) -> dict:
    """A parsed experiment file with the defaults that a file left out means and a record left out does not
    (``env.count``: a run recorded before it existed counted every event; a file of today gets the documented
    default)."""
    if isinstance(data, dict) and isinstance(data.get("env"), dict):
        return {**data, "env": with_default_count(data["env"])}
    return data


def experiment_from_dict(data: dict) -> ExperimentConfig:
    """An ExperimentConfig from plain data (a parsed TOML or experiment.json), validated, with ``ppo.precision =
    "auto"`` resolved for this machine: the concrete precision is what job keys hash and experiment.json records,
    so a run never mixes precisions without saying so."""
    return with_ppo(_section(ExperimentConfig, data, ""))


def with_ppo(cfg: ExperimentConfig, **overrides) -> ExperimentConfig:
    """``cfg`` with ``overrides`` of its PPO settings (``device=``, ``precision=``), ``auto`` resolved, validated."""
    from dataclasses import replace

    ppo = {**cfg.ppo, **overrides}
    if ppo.get("precision") == "auto":
        ppo["precision"] = resolve_precision("auto", str(ppo.get("device", "cpu")).partition(":")[0])
    return replace(cfg, ppo=ppo).validate()
