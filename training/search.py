"""Searches under a cost bucket: the baselines PreNAS's zero-cost selection replaces.

- `evolution`: AutoFormer's. A random population of 50, then per generation the top 10 of everything evaluated
  give 25 mutants (depth/embed mutate with probability 0.4, each layer's heads/ratio with 0.2) and 25 per-gene
  crossovers; archs already evaluated are rejected.
- `aging`: regularized evolution (Real et al. 2019). A random population of P; each step the best of S members
  sampled with replacement has a mutated child, which joins while the OLDEST member leaves.
- `random`: distinct random archs.
- `enas`: an ENAS-style controller (Pham et al. 2018) trained by REINFORCE on the fitness (`enas`'s docstring says
  what of ENAS it keeps).

Every algorithm is `search(space, fitness, cfg) -> SearchResult` (SEARCHES picks one by name) and shares the bucket
check (lo <= cost < hi on params and/or FLOPs), the random arch, mutation, crossover and one memo: a visited arch is
never evaluated again, and each stops after the same number `cfg.evaluations` of distinct evaluations. Any model
family: the space's family (`zoo.family`) draws, mutates, crosses and costs its archs; one without mutation is
searched at random only, and one without `build_arch` (its choices as named decisions) not by `enas`.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from training.checks import LR, SEED, Range, check_all, write_json
from zoo.budget import FLOPS_LABEL
from zoo.family import Arch, Family, Space, get_family
from zoo.io import atomic_write_figure

Fitness = Callable[[Arch], float]
MANY = Range(int, 1, 100_000)
SEARCH_RANGES = {"evaluations": Range(int, 1, 10_000_000), "population": MANY, "parents": MANY,
                 "mutants": Range(int, 0, MANY.high), "crossovers": Range(int, 0, MANY.high), "sample": MANY,
                 "s_prob": Range(float, 0, 1), "m_prob": Range(float, 0, 1), "seed": SEED,
                 "max_tries": Range(int, 1, 10_000_000), "controller_lr": LR,
                 "baseline_decay": Range(float, 0, 1, open_high=True), "entropy_weight": Range(float, 0, 1000)}


@dataclass
class SearchConfig:
    evaluations: int = 1000  # distinct archs evaluated, the budget every algorithm shares (AutoFormer: 50 x 20)
    min_params: float | None = None  # a bucket is [min, max): min <= cost < max
    max_params: float | None = None
    min_flops: float | None = None
    max_flops: float | None = None
    population: int = 50  # evolution and aging; also how often the history records the best score
    parents: int = 10  # evolution: the top archs that mutate and cross
    mutants: int = 25
    crossovers: int = 25
    sample: int = 10  # aging: the tournament size S
    s_prob: float = 0.4
    m_prob: float = 0.2
    seed: int = 0
    max_tries: int = 10_000  # random draws (enas: controller samples) allowed to find one new arch within the bucket
    controller_lr: float = 0.05  # enas: Adam's learning rate on the controller's logits
    baseline_decay: float = 0.95  # enas: the reward baseline's exponential moving average
    entropy_weight: float = 0.1  # enas: weight of the policy's entropy beside the advantage (in reward deviations)

    @classmethod
    def of_population(cls, population: int, **settings) -> SearchConfig:
        """Evolution's split of a population as the commands set it: its best 10 (at most) are the parents, half
        of each generation mutants, the rest crossovers."""
        return cls(population=population, parents=min(10, population), mutants=population // 2,
                   crossovers=population - population // 2, **settings)

    def __post_init__(self) -> None:
        check_all(self, SEARCH_RANGES)
        for what in ("params", "flops"):
            lo, hi = getattr(self, f"min_{what}"), getattr(self, f"max_{what}")
            if lo is not None and hi is not None and lo >= hi:
                raise ValueError(f"min_{what} ({lo:,.0f}) must be below max_{what} ({hi:,.0f}): a bucket is [min, max)")


@dataclass
class SearchResult:
    algorithm: str
    best: Arch
    best_score: float
    evaluations: int
    seconds: float
    history: list[float] = field(default_factory=list)  # best score after every `population` evaluations and at the end
    scores: dict[Arch, float] = field(default_factory=dict)  # every evaluated arch, in evaluation order
    population: list[Arch] = field(default_factory=list)  # the last population, oldest first (random search: none)
    policy: dict[str, dict[str, float]] = field(default_factory=dict)  # enas: the last policy, per decision


def _within(value: float, lo: float | None, hi: float | None) -> bool:
    return (lo is None or value >= lo) and (hi is None or value < hi)


def fits(space: Space, cfg: SearchConfig, arch: Arch) -> bool:
    """Whether `arch` lies in the bucket on both costs."""
    family = get_family(space.family)
    return _within(family.params(space, arch), cfg.min_params, cfg.max_params) and \
        _within(family.flops(space, arch), cfg.min_flops, cfg.max_flops)


def _bounds(cfg: SearchConfig) -> str:
    def one(what: str, lo: float | None, hi: float | None) -> str:
        return f"{what} in [{lo or 0:,.0f}, {'inf' if hi is None else f'{hi:,.0f}'})"

    return ", ".join(one(what, lo, hi) for what, lo, hi in (("params", cfg.min_params, cfg.max_params),
                                                            ("FLOPs", cfg.min_flops, cfg.max_flops))
                     if lo is not None or hi is not None) or "no bounds"


def check_reachable(space: Space, cfg: SearchConfig) -> None:
    """A bucket outside the space's cost range (`Family.cost_range`) holds no arch at all."""
    for what, (low, high), lo, hi in zip(("params", "FLOPs"), get_family(space.family).cost_range(space),
                                         (cfg.min_params, cfg.min_flops), (cfg.max_params, cfg.max_flops), strict=True):
        if (hi is not None and low >= hi) or (lo is not None and high < lo):
            raise ValueError(f"no architecture of {space.name} fits {_bounds(cfg)}: its {what} range from "
                             f"{low:,} to {high:,}")


def evolvable(family: Family, algorithm: str) -> Family:
    """`family`, if it can mutate and cross its archs; else ValueError naming the search that works without."""
    if family.mutate is None or family.crossover is None:
        raise ValueError(f"{algorithm} search mutates archs, which the {family.title} family cannot: use random search")
    return family


class _Run:
    """What every algorithm shares: the seeded rng, the bucket, and the memo that evaluates an arch once and stops
    at the budget."""

    def __init__(self, algorithm: str, space: Space, fitness: Fitness, cfg: SearchConfig, progress: bool):
        check_reachable(space, cfg)
        self.algorithm, self.space, self.fitness, self.cfg = algorithm, space, fitness, cfg
        self.family = get_family(space.family)
        self.rng = random.Random(cfg.seed)
        self.scores: dict[Arch, float] = {}
        self.history: list[float] = []
        self.bar = tqdm(total=cfg.evaluations, desc=algorithm, unit="arch", disable=not progress)
        self.t0 = time.perf_counter()

    @property
    def spent(self) -> bool:
        return len(self.scores) >= self.cfg.evaluations

    def ranked(self) -> list[Arch]:
        return sorted(self.scores, key=lambda a: -self.scores[a])

    def _new(self, arch: Arch | None) -> bool:
        return arch is not None and arch not in self.scores and fits(self.space, self.cfg, arch)

    def evaluate(self, arch: Arch) -> None:
        self.scores[arch] = self.fitness(arch)
        if len(self.scores) % self.cfg.population == 0:
            self.history.append(self.scores[self.ranked()[0]])
        self.bar.update(1)
        self.bar.set_postfix(best=f"{max(self.scores.values()):.2f}")

    def new_archs(self, make: Callable[[], Arch | None], n: int) -> list[Arch]:
        """Up to `n` archs from `make` that are in the bucket and not yet visited, each evaluated as it is found
        (as AutoFormer's legality check does); fewer when the budget is spent or `max_tries` draws find none."""
        out: list[Arch] = []
        while len(out) < n and not self.spent:
            arch = next((a for a in (make() for _ in range(self.cfg.max_tries)) if self._new(a)), None)
            if arch is None:
                break
            self.evaluate(arch)
            out.append(arch)
        return out

    def initial(self, n: int) -> list[Arch]:
        """`n` distinct random archs in the bucket, evaluated."""
        archs = self.new_archs(lambda: self.family.random_arch(self.space, self.rng), n)
        if not archs:
            self.none_fits("random draws")
        return archs

    def none_fits(self, draws: str) -> None:
        self.bar.close()
        raise ValueError(f"no architecture of {self.space.name} fits {_bounds(self.cfg)} in "
                         f"{self.cfg.max_tries:,} {draws}")

    def result(self, population: list[Arch]) -> SearchResult:
        self.bar.close()
        best = self.ranked()[0]
        if len(self.scores) % self.cfg.population:
            self.history.append(self.scores[best])
        return SearchResult(self.algorithm, best, self.scores[best], len(self.scores), time.perf_counter() - self.t0,
                            self.history, self.scores, population)


def evolution(space: Space, fitness: Fitness, cfg: SearchConfig, progress: bool = True) -> SearchResult:
    """AutoFormer's evolution: the top `parents` of everything evaluated mutate and cross, visited archs rejected."""
    family = evolvable(get_family(space.family), "evolution")
    run = _Run("evolution", space, fitness, cfg, progress)
    population = run.initial(cfg.population)
    while not run.spent:
        top = run.ranked()[:cfg.parents]
        children = run.new_archs(lambda top=top: family.mutate(space, run.rng.choice(top), run.rng, cfg.s_prob,
                                                               cfg.m_prob), cfg.mutants)
        children += run.new_archs(lambda top=top: family.crossover(space, run.rng.choice(top), run.rng.choice(top),
                                                                   run.rng), cfg.crossovers)
        if not children:  # nothing new within reach of the parents
            break
        population = top + children
    return run.result(population)


def aging(space: Space, fitness: Fitness, cfg: SearchConfig, progress: bool = True) -> SearchResult:
    """Regularized evolution (Real et al. 2019): the child of the best of `sample` members joins, the oldest leaves;
    a child already evaluated is drawn again."""
    family = evolvable(get_family(space.family), "aging")
    run = _Run("aging", space, fitness, cfg, progress)
    population = deque(run.initial(cfg.population))
    while not run.spent:
        parent = max((run.rng.choice(population) for _ in range(cfg.sample)), key=run.scores.__getitem__)
        child = run.new_archs(lambda parent=parent: family.mutate(space, parent, run.rng, cfg.s_prob, cfg.m_prob), 1)
        if not child:  # nothing new within reach of the parent
            break
        population.append(child[0])
        population.popleft()
    return run.result(list(population))


def random_search(space: Space, fitness: Fitness, cfg: SearchConfig, progress: bool = True) -> SearchResult:
    """`evaluations` distinct random archs in the bucket."""
    run = _Run("random", space, fitness, cfg, progress)
    run.initial(cfg.evaluations)
    return run.result([])


def controllable(family: Family) -> Family:
    """`family`, if it lists its choices as decisions (`Family.build_arch`); else ValueError naming the searches that
    work without."""
    if family.build_arch is None:
        raise ValueError(f"enas search samples an arch decision by decision, which the {family.title} family cannot "
                         f"list (Family.build_arch): use {'evolution, aging or ' if family.mutate else ''}random "
                         f"search")
    return family


class Controller:
    """ENAS's policy, factorized: one categorical per decision name, its logits a tensor created (at 0: uniform) the
    first time the family asks that decision; archs are drawn with the search's rng, and REINFORCE steps go through
    torch.optim.Adam."""

    def __init__(self, family: Family, space: Space, cfg: SearchConfig, rng: random.Random):
        import torch  # only enas needs it: `python -m training search --help` stays light

        self.torch, self.family, self.space, self.cfg, self.rng = torch, family, space, cfg, rng
        self.options: dict[str, tuple] = {}
        self.logits: dict[str, torch.Tensor] = {}
        self.adam: torch.optim.Adam | None = None

    def _logits(self, name: str, options: tuple):
        if name not in self.options:
            if not options:
                raise ValueError(f"decision {name!r} of the {self.family.title} family offers no options")
            self.options[name] = options
            logits = self.logits[name] = self.torch.zeros(len(options), requires_grad=True)
            if self.adam is None:
                self.adam = self.torch.optim.Adam([logits], lr=self.cfg.controller_lr)
            else:
                self.adam.add_param_group({"params": [logits]})
        elif self.options[name] != options:
            raise ValueError(f"decision {name!r} of the {self.family.title} family offered "
                             f"{self.options[name]} before and {options} now: a name must fix its options")
        return self.logits[name]

    def sample(self) -> tuple[Arch, list[tuple[str, int]]]:
        """An arch drawn from the policy, with its decisions (name, option index) in order."""
        taken: list[tuple[str, int]] = []

        def choose(name: str, options: tuple):
            options = tuple(options)
            probs = self.torch.softmax(self._logits(name, options).detach(), 0).tolist()
            index = self.rng.choices(range(len(options)), weights=probs)[0]
            taken.append((name, index))
            return options[index]

        return self.family.build_arch(self.space, choose), taken

    def learn(self, taken: list[tuple[str, int]], advantage: float) -> None:
        """One REINFORCE step: the log-probability of the decisions `taken` up by `advantage` (reward minus
        baseline), and their entropy up by `entropy_weight`."""
        log_p = [self.torch.log_softmax(self.logits[name], 0) for name, _ in taken]
        objective = sum(advantage * lp[i] - self.cfg.entropy_weight * (lp.exp() * lp).sum()
                        for lp, (_, i) in zip(log_p, taken, strict=True))
        self.adam.zero_grad()
        (-objective).backward()
        self.adam.step()

    def probabilities(self) -> dict[str, dict[str, float]]:
        """The policy now: per decision name, each option's probability."""
        return {name: {str(o): p for o, p in zip(options, self.torch.softmax(self.logits[name], 0).tolist(),
                                                     strict=True)}
                for name, options in self.options.items()}


def log_probability(space: Space, arch: Arch, policy: dict[str, dict[str, float]]) -> float:
    """The log-probability of `arch` under a factorized policy (per decision name, each option's probability, as
    `Controller.probabilities` and DARTS's softmaxed logits give it): the sum over the decisions that build it.
    A decision the policy never met counts as uniform over its options (the policy's own start)."""
    family = get_family(space.family)
    if family.decisions_of is None or family.build_arch is None:
        raise ValueError(f"the {family.title} family cannot list an arch's decisions (Family.decisions_of)")
    taken, total = family.decisions_of(space, arch), [0.0]

    def choose(name: str, options: tuple):
        choice = taken[name]
        probs = policy.get(name) or {str(o): 1 / len(options) for o in options}
        total[0] += math.log(probs[str(choice)])
        return choice

    if family.build_arch(space, choose) != arch:
        raise ValueError(f"{family.title}'s decisions_of does not rebuild {arch.id}")
    return total[0]


def enas(space: Space, fitness: Fitness, cfg: SearchConfig, progress: bool = True) -> SearchResult:
    """An ENAS-style controller (Pham et al. 2018): archs sampled decision by decision from a learned policy,
    rewarded by their fitness (the supernet's validation accuracy), trained by REINFORCE with Adam (`controller_lr`)
    against an exponential moving-average baseline (`baseline_decay`; it starts at the first reward, not at 0) with
    an entropy bonus (`entropy_weight`), one update per sample.

    Kept from ENAS: the REINFORCE controller, its moving-average baseline, Adam, the entropy bonus, the shared weights
    as the reward. Differs: the supernet is trained beforehand (as every search here uses it), not in turns with the
    controller; the policy is factorized (one independent categorical per decision name, as simple ENAS variants
    and reproductions use) instead of an LSTM whose every decision sees the earlier ones. A name may depend on
    earlier decisions (a layer's decisions exist only when the depth reaches it; HyTra names each layer's step by
    its input scale), which is as far as the factorized policy conditions. The advantage is divided by the moving
    standard deviation of the reward about the baseline (same decay): Adam's steps are already independent of the
    fitness's units, and so the entropy weight is too (top-1 in % or as a fraction search alike).

    As every search here: the budget is `evaluations` DISTINCT archs. An arch drawn again is rewarded with the
    memo's fitness (the policy learns from it) but not evaluated or counted again; an arch outside the bucket is
    drawn again without reward or update (rejection sampling: the policy over the bucket, its normalisation's
    gradient ignored). The search stops early when `max_tries` samples in a row bring no new arch (a policy
    collapsed on visited archs; the entropy bonus delays that) and fails when the first `max_tries` find none."""
    family = controllable(get_family(space.family))
    run = _Run("enas", space, fitness, cfg, progress)
    controller = Controller(family, space, cfg, run.rng)
    baseline, variance = None, 0.0
    idle = 0  # samples since the last new arch
    while not run.spent and idle < cfg.max_tries:
        arch, taken = controller.sample()
        idle += 1
        if not fits(space, cfg, arch):
            continue
        if arch not in run.scores:
            run.evaluate(arch)
            idle = 0
        reward = run.scores[arch]
        deviation = 0.0 if baseline is None else reward - baseline
        baseline = reward - cfg.baseline_decay * deviation
        variance = cfg.baseline_decay * variance + (1 - cfg.baseline_decay) * deviation**2
        controller.learn(taken, (reward - baseline) / variance**0.5 if variance > 0 else 0.0)
    if not run.scores:
        run.none_fits("controller samples")
    result = run.result([])
    result.policy = controller.probabilities()
    return result


SEARCHES: dict[str, Callable[..., SearchResult]] = {"evolution": evolution, "aging": aging, "random": random_search,
                                                    "enas": enas}


def write_search(space: Space, cfg: SearchConfig, result: SearchResult, fitness: str,
                 out_dir: str | Path) -> Path:
    """`search.json`: the algorithm, the bucket, the settings, the cost (archs evaluated, seconds), the best arch and
    every evaluated one (best first) with its params, FLOPs (MACs) and score, and the best score so far every
    `population` evaluations (enas: and its controller's last policy); `fitness` says what the score is."""
    family = get_family(space.family)

    def row(a: Arch) -> dict:
        return {"id": a.id, "arch": a.to_dict(), "params": family.params(space, a), "flops": family.flops(space, a),
                "score": result.scores[a]}

    ranked = sorted(result.scores, key=lambda a: -result.scores[a])
    doc = {"schema_version": 1, "kind": "prezoo.search", "space": space.name, "space_hash": space.hash,
           "algorithm": result.algorithm, "fitness": fitness, "settings": asdict(cfg),
           "evaluations": result.evaluations, "seconds": result.seconds, "best": row(result.best),
           "history": result.history, "evaluated": [row(a) for a in ranked]}
    if result.policy:
        doc["policy"] = result.policy
    return write_json(Path(out_dir) / "search.json", doc)


def plot_search(space: Space, cfg: SearchConfig, result: SearchResult, fitness: str,
                path: str | Path) -> Path:
    """Every evaluated arch against the bucketed cost (the best circled, the bounds dashed), and the best score so
    far against the archs evaluated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_params = cfg.min_params is not None or cfg.max_params is not None
    family = get_family(space.family)
    cost, bounds, unit = (family.params, (cfg.min_params, cfg.max_params), "M params") if by_params \
        else (family.flops, (cfg.min_flops, cfg.max_flops), f"M {FLOPS_LABEL}")
    archs = list(result.scores)
    fig, (ax, curve) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110, width_ratios=(2, 1))
    ax.scatter([cost(space, a) / 1e6 for a in archs], [result.scores[a] for a in archs], s=10, alpha=0.5,
               label=f"{len(archs)} evaluated")
    ax.scatter([cost(space, result.best) / 1e6], [result.best_score], s=80, facecolors="none", edgecolors="red",
               linewidths=1.8, label=f"best {result.best.id}")
    for bound in (b for b in bounds if b is not None):
        ax.axvline(bound / 1e6, color="grey", ls="--", lw=1)
    ax.set_xlabel(unit)
    ax.set_ylabel(fitness)
    ax.legend(fontsize=8)
    steps = [min(cfg.population * (i + 1), result.evaluations) for i in range(len(result.history))]
    curve.plot(steps, result.history, marker="o")
    curve.set_xlabel("archs evaluated")
    curve.set_ylabel("best score so far")
    fig.suptitle(f"{space.name}: {result.algorithm} search, {result.evaluations} archs evaluated, bucket "
                 f"{_bounds(cfg)}", fontsize=10)
    fig.tight_layout()
    path = atomic_write_figure(path, fig)
    plt.close(fig)
    return path
