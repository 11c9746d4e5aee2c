"""The noisy labeler: the only thing of a PATE ensemble the student side ever receives.

A :class:`NoisyLabeler` turns queries into labels through one aggregation mechanism
(:data:`MECHANISMS`: ``lnmax``, ``gnmax``, ``confident-gnmax``), accounts every answer, checks
the budget **before** each query, and writes each answer to the :class:`~freekd.privacy.ledger.
PrivacyLedger` before it returns it. The teachers stay behind the ``votes`` callable it is given;
the labeler exposes labels and privacy figures, never votes, logits or weights.

Noise is drawn per query from a generator seeded by (seed, query index), so an interrupted and
resumed labelling run releases exactly the labels an uninterrupted one would, and a query that
is already in the ledger is answered from the ledger without drawing (or spending) anything.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from freekd.errors import FreekdError
from freekd.privacy import rdp as analysis
from freekd.privacy.aggregation import (
    ABSTAIN,
    confident_gnmax_labels,
    gnmax_labels,
    interactive_gnmax_labels,
    lnmax_labels,
)
from freekd.privacy.budget import PrivacyBudget
from freekd.privacy.ledger import PrivacyLedger
from freekd.privacy.rdp import DEFAULT_ORDERS, FloatArray
from freekd.privacy.report import (
    BUDGET_NOTE,
    DATA_DEPENDENT_UNSANITIZED,
    DATA_INDEPENDENT,
    with_figures,
)
from freekd.registry import Registry


class Mechanism:
    """One aggregation rule with its two per-query RDP costs.

    ``independent_cost`` is the data-independent worst case of one query (publishable);
    ``dependent_cost`` the data-dependent cost at these votes (not publishable as is).
    """

    name: ClassVar[str]
    #: Whether every query needs the student's class probabilities (Interactive-GNMax).
    needs_student: ClassVar[bool] = False

    def answer(self, votes: Tensor, rng: torch.Generator) -> Tensor:
        """(N, K) votes → (N,) labels, :data:`ABSTAIN` where the mechanism declines."""
        raise NotImplementedError

    def respond(
        self, votes: Tensor, rng: torch.Generator, student: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(N,) labels and (N,) booleans: which of them the teachers gave (and paid for)."""
        labels = self.answer(votes, rng)
        return labels, labels != ABSTAIN

    def independent_cost(self, orders: FloatArray, *, answered: bool) -> FloatArray:
        """Data-independent cost of one query; ``answered``: the teachers gave its label."""
        raise NotImplementedError

    def dependent_cost(
        self,
        votes: np.ndarray,
        orders: FloatArray,
        *,
        answered: bool,
        student: np.ndarray | None = None,
    ) -> FloatArray:
        """Data-dependent cost at these (K,) votes (and the student's (K,) probabilities)."""
        raise NotImplementedError

    def parameters(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload,no-any-return]


MECHANISMS: Registry[type[Mechanism]] = Registry("aggregation mechanism")


@MECHANISMS.register("lnmax")
@dataclass(frozen=True)
class LNMax(Mechanism):
    """LNMax (Papernot et al. 2017): Laplace noise of scale 1/γ; only data-independent costs."""

    gamma: float
    name: ClassVar[str] = "lnmax"

    def answer(self, votes: Tensor, rng: torch.Generator) -> Tensor:
        return lnmax_labels(votes, gamma=self.gamma, rng=rng)

    def independent_cost(self, orders: FloatArray, *, answered: bool) -> FloatArray:
        return analysis.laplace_rdp(orders, gamma=self.gamma)

    def dependent_cost(
        self,
        votes: np.ndarray,
        orders: FloatArray,
        *,
        answered: bool,
        student: np.ndarray | None = None,
    ) -> FloatArray:
        return self.independent_cost(orders, answered=answered)


@MECHANISMS.register("gnmax")
@dataclass(frozen=True)
class GNMax(Mechanism):
    """GNMax (Papernot et al. 2018 §4.1), with the data-dependent Thm 6 cost."""

    sigma: float
    name: ClassVar[str] = "gnmax"

    def answer(self, votes: Tensor, rng: torch.Generator) -> Tensor:
        return gnmax_labels(votes, sigma=self.sigma, rng=rng)

    def independent_cost(self, orders: FloatArray, *, answered: bool) -> FloatArray:
        return analysis.gnmax_rdp(orders, sigma=self.sigma)

    def dependent_cost(
        self,
        votes: np.ndarray,
        orders: FloatArray,
        *,
        answered: bool,
        student: np.ndarray | None = None,
    ) -> FloatArray:
        log_q = analysis.gnmax_log_q(votes[None], sigma=self.sigma)
        return analysis.gnmax_data_dependent_rdp(log_q, orders, sigma=self.sigma)[0]


@MECHANISMS.register("confident-gnmax")
@dataclass(frozen=True)
class ConfidentGNMax(Mechanism):
    """Confident-GNMax (Papernot et al. 2018 Alg. 1): a noisy threshold check, then GNMax."""

    sigma: float
    sigma_threshold: float
    threshold: float
    name: ClassVar[str] = "confident-gnmax"

    def answer(self, votes: Tensor, rng: torch.Generator) -> Tensor:
        return confident_gnmax_labels(
            votes,
            threshold=self.threshold,
            sigma_threshold=self.sigma_threshold,
            sigma=self.sigma,
            rng=rng,
        )

    def _checked(self, votes: np.ndarray, student: np.ndarray | None) -> np.ndarray:
        """The counts whose maximum the threshold check compares with T."""
        return votes

    def independent_cost(self, orders: FloatArray, *, answered: bool) -> FloatArray:
        cost = analysis.threshold_rdp(orders, sigma=self.sigma_threshold)
        return cost + analysis.gnmax_rdp(orders, sigma=self.sigma) if answered else cost

    def dependent_cost(
        self,
        votes: np.ndarray,
        orders: FloatArray,
        *,
        answered: bool,
        student: np.ndarray | None = None,
    ) -> FloatArray:
        cost = analysis.threshold_data_dependent_rdp(
            self._checked(votes, student)[None],
            orders,
            threshold=self.threshold,
            sigma=self.sigma_threshold,
        )[0]
        if answered:
            log_q = analysis.gnmax_log_q(votes[None], sigma=self.sigma)
            cost = cost + analysis.gnmax_data_dependent_rdp(log_q, orders, sigma=self.sigma)[0]
        return cost


@MECHANISMS.register("interactive-gnmax")
@dataclass(frozen=True)
class InteractiveGNMax(ConfidentGNMax):
    """Interactive-GNMax (Papernot et al. 2018 Alg. 2): the teachers answer where they disagree
    with the student; a confident student labels the rest itself.

    The check's statistic max_j(n_j − O·p_j) moves by at most one between neighbouring data
    sets (p is public), so its costs are those of Confident-GNMax's check at that statistic;
    a label the student gives costs nothing beyond the check.
    """

    confidence_scale: float
    student_threshold: float
    name: ClassVar[str] = "interactive-gnmax"
    needs_student: ClassVar[bool] = True

    def respond(
        self, votes: Tensor, rng: torch.Generator, student: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        if student is None:
            raise FreekdError("interactive-gnmax needs the student's probabilities")
        return interactive_gnmax_labels(
            votes,
            student,
            confidence_scale=self.confidence_scale,
            threshold=self.threshold,
            student_threshold=self.student_threshold,
            sigma_threshold=self.sigma_threshold,
            sigma=self.sigma,
            rng=rng,
        )

    def _checked(self, votes: np.ndarray, student: np.ndarray | None) -> np.ndarray:
        if student is None:
            raise FreekdError("interactive-gnmax needs the student's probabilities")
        return votes - self.confidence_scale * student


BUDGET_FIGURES = (DATA_INDEPENDENT, DATA_DEPENDENT_UNSANITIZED)


@dataclass
class LabelingResult:
    """What one :meth:`NoisyLabeler.label` call released."""

    labels: Tensor  # (N,) int64; ABSTAIN where declined or not reached
    reached: int  # queries handled (answered or declined) before the budget stopped the call
    stopped_by_budget: bool
    by_teachers: Tensor  # (N,) bool: the teachers gave the label (and their budget paid for it)


class NoisyLabeler:
    """Queries → noisy labels through ``mechanism``, budgeted, accounted and ledgered.

    Args:
        votes: images (B, C, H, W) in [0, 1] → (B, K) integer vote counts of the ensemble.
        mechanism: the aggregation rule.
        budget: the (ε, δ) that no answer may push the ``budget_on`` figure past.
        ledger: where every answer is recorded before release (an existing ledger resumes).
        seed: seeds the per-query noise generators.
        num_classes: K.
        budget_on: which ε the budget limits: ``data-independent`` (publishable; the default)
            or ``data-dependent-unsanitized`` (the PATE papers' practice; the resulting ε and
            even the number of answers then depend on the private data).
        orders: Rényi orders.
        prior: RDP already spent on the same private data before any answer (``orders``-long
            curve), e.g. the DP-SGD teacher whose synthesizer made the queries (data-free PATE);
            it is added to both curves, so the budget covers the composition.
        prior_record: what ``prior`` is, for the report.
    """

    def __init__(
        self,
        votes: Callable[[Tensor], Tensor],
        mechanism: Mechanism,
        *,
        budget: PrivacyBudget,
        ledger: PrivacyLedger,
        seed: int,
        num_classes: int,
        budget_on: str = DATA_INDEPENDENT,
        orders: Sequence[float] = DEFAULT_ORDERS,
        prior: ArrayLike | None = None,
        prior_record: dict[str, Any] | None = None,
    ) -> None:
        if budget_on not in BUDGET_FIGURES:
            raise FreekdError(f"budget_on must be one of {', '.join(BUDGET_FIGURES)}")
        self._votes = votes
        self.mechanism = mechanism
        self.budget = budget
        self.ledger = ledger
        self.seed = seed
        self.num_classes = num_classes
        self.budget_on = budget_on
        self.orders = np.asarray(tuple(orders), dtype=np.float64)
        self._prior = (
            np.zeros_like(self.orders) if prior is None else np.asarray(prior, dtype=np.float64)
        )
        if self._prior.shape != self.orders.shape or not np.all(self._prior >= 0):
            raise FreekdError("the prior RDP curve must be non-negative, one value per order")
        self._prior_record = prior_record
        self._released: dict[int, int] = {}
        self._by_teachers: dict[int, bool] = {}
        self._recorded_rdp: dict[int, FloatArray] = {}  # a resumed ledger's, until verified
        # A resumed run: everything in the ledger is already spent.
        self._independent, self._dependent = spent_curves(
            mechanism, self.orders, ledger.entries, ledger.path, prior=self._prior
        )
        for entry in ledger:
            self._released[int(entry["query"])] = int(entry["label"])
            self._by_teachers[int(entry["query"])] = _by_teachers(entry)
            self._recorded_rdp[int(entry["query"])] = np.asarray(entry["rdp"], dtype=np.float64)

    @staticmethod
    def ledger_header(
        mechanism: Mechanism, budget: PrivacyBudget, *, seed: int, budget_on: str
    ) -> dict[str, Any]:
        return {
            "mechanism": mechanism.name,
            "parameters": mechanism.parameters(),
            "budget": {"epsilon": budget.epsilon, "delta": budget.delta, "on": budget_on},
            "seed": seed,
        }

    def _epsilon(self, curve: FloatArray) -> float:
        return analysis.epsilon_from_rdp(curve, self.orders, delta=self.budget.delta)[0]

    def _fits(self, independent: FloatArray, dependent: FloatArray) -> bool:
        curve = independent if self.budget_on == DATA_INDEPENDENT else dependent
        return self._epsilon(curve) <= self.budget.epsilon

    def label(
        self,
        indices: Sequence[int],
        images: Tensor,
        *,
        student_probabilities: Tensor | None = None,
    ) -> LabelingResult:
        """Label queries ``indices`` (global, unique, in order) with images (N, C, H, W).

        Queries already in the ledger get their recorded labels (no new cost). New queries are
        answered one at a time; before each, the cost of answering it is added to the budgeted
        curve, and if that would exceed the budget, this and every later query stay unanswered
        (:data:`ABSTAIN`) and ``stopped_by_budget`` is set. ``student_probabilities`` (N, K) are
        the student's softmax outputs, which Interactive-GNMax needs.
        """
        if len(indices) != len(images):
            raise FreekdError(f"{len(indices)} query indices for {len(images)} images")
        if self.mechanism.needs_student and student_probabilities is None:
            raise FreekdError(f"{self.mechanism.name} needs the student's probabilities")
        labels = torch.full((len(indices),), ABSTAIN, dtype=torch.long)
        by_teachers = torch.zeros(len(indices), dtype=torch.bool)
        new = [i for i, index in enumerate(indices) if int(index) not in self._released]
        for i, index in enumerate(indices):
            if int(index) in self._released:
                labels[i] = self._released[int(index)]
                by_teachers[i] = self._by_teachers[int(index)]
        votes = self._new_votes(images[new]) if new else None
        for row, i in enumerate(new):
            assert votes is not None
            student = None if student_probabilities is None else student_probabilities[i].cpu()
            answer = self._answer(int(indices[i]), votes[row], student)
            if answer is None:
                return LabelingResult(
                    labels, reached=i, stopped_by_budget=True, by_teachers=by_teachers
                )
            labels[i], by_teachers[i] = answer
        return LabelingResult(
            labels, reached=len(indices), stopped_by_budget=False, by_teachers=by_teachers
        )

    @property
    def unverified(self) -> list[int]:
        """Queries of the ledger this run read that :meth:`verify` has not re-derived yet."""
        return sorted(self._recorded_rdp)

    def verify(
        self,
        indices: Sequence[int],
        images: Tensor,
        *,
        student_probabilities: Tensor | None = None,
    ) -> None:
        """Re-derive recorded answers from the teachers' votes: each query's noise is seeded by
        its index, so the label, who gave it and its RDP cost come out as the ledger says unless
        the ledger was edited (a zeroed cost would roll spending back) or written for other
        teachers or queries. Nothing is spent and nothing is written.

        Raises:
            FreekdError: a recorded answer differs from the one the votes give.
        """
        rows = [i for i, index in enumerate(indices) if int(index) in self._recorded_rdp]
        if not rows:
            return
        votes = self._new_votes(images[rows])
        for row, i in enumerate(rows):
            index = int(indices[i])
            student = None if student_probabilities is None else student_probabilities[i].cpu()
            label, teachers, cost = self._respond(index, votes[row], student)
            recorded = self._recorded_rdp.pop(index)
            if (
                label != self._released[index]
                or teachers != self._by_teachers[index]
                or not np.allclose(cost, recorded, rtol=1e-6, atol=1e-12)
            ):
                raise FreekdError(
                    f"{self.ledger.path}: the recorded answer to query {index} is not the one "
                    "these teachers' votes give (the ledger was edited, or written for other "
                    "teachers, queries or student model); restore it from a backup or resume "
                    "with the original ones"
                )

    def _new_votes(self, images: Tensor) -> Tensor:
        """The ensemble's vote counts (N, K) for queries not yet in the ledger, shape-checked."""
        with torch.no_grad():
            votes = self._votes(images).detach().cpu().to(torch.int64)
        if votes.shape != (len(images), self.num_classes):
            raise FreekdError(
                f"the ensemble returned votes of shape {tuple(votes.shape)}, expected "
                f"({len(images)}, {self.num_classes})"
            )
        return votes

    def _respond(
        self, index: int, counts: Tensor, student: Tensor | None
    ) -> tuple[int, bool, FloatArray]:
        """Query ``index``'s answer from its vote ``counts`` (K,), its noise seeded by the index
        (so a resumed run re-derives it): the label, whether the teachers gave it, and its
        data-dependent RDP cost. Nothing is spent or recorded."""
        rng = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        label, teachers = self.mechanism.respond(
            counts[None], rng, None if student is None else student[None]
        )
        cost = self.mechanism.dependent_cost(
            counts.numpy().astype(np.float64),
            self.orders,
            answered=bool(teachers[0]),
            student=None if student is None else student.numpy().astype(np.float64),
        )
        return int(label[0]), bool(teachers[0]), cost

    def _answer(
        self, index: int, counts: Tensor, student: Tensor | None
    ) -> tuple[int, bool] | None:
        """Answer query ``index`` from its vote ``counts`` (K,), or None if the budget forbids it.

        Returns the released label and whether the teachers gave it; the answer is in the
        ledger (fsynced) and in the running curves before it is returned.
        """
        counts_np = counts.numpy().astype(np.float64)
        student_np = None if student is None else student.numpy().astype(np.float64)
        # Worst case first: the budget must hold even if the teachers answer.
        worst_independent = self._independent + self.mechanism.independent_cost(
            self.orders, answered=True
        )
        worst_dependent = self._dependent + self.mechanism.dependent_cost(
            counts_np, self.orders, answered=True, student=student_np
        )
        if not self._fits(worst_independent, worst_dependent):
            return None
        label, teachers, dependent = self._respond(index, counts, student)
        # On disk (fsynced) before the label leaves this object.
        self.ledger.append(
            {
                "query": index,
                "label": label,
                "by": "teachers" if teachers else ("student" if label != ABSTAIN else None),
                "rdp": [float(v) for v in dependent],
            }
        )
        self._independent += self.mechanism.independent_cost(self.orders, answered=teachers)
        self._dependent += dependent
        self._released[index] = label
        self._by_teachers[index] = teachers
        return label, teachers

    @property
    def answered(self) -> int:
        """Queries whose label the teachers gave."""
        return sum(self._by_teachers.values())

    @property
    def labelled(self) -> int:
        """Queries with a label (by the teachers or, with Interactive-GNMax, the student)."""
        return sum(label != ABSTAIN for label in self._released.values())

    @property
    def queries(self) -> int:
        return len(self._released)

    def privacy_report(self) -> dict[str, Any]:
        """``report.json["privacy"]`` (DESIGN.md): mechanisms, curves, both ε, and their kinds
        (``epsilons``: every figure with its kind, the guarantee first)."""
        delta = self.budget.delta
        independent, independent_order = analysis.epsilon_from_rdp(
            self._independent, self.orders, delta=delta
        )
        dependent, dependent_order = analysis.epsilon_from_rdp(
            self._dependent, self.orders, delta=delta
        )
        note = (
            "data_dependent_epsilon depends on the private votes and is not private to publish "
            "without a smooth-sensitivity release"
        )
        if self.budget_on == DATA_DEPENDENT_UNSANITIZED:
            note += f"; {BUDGET_NOTE}"
        record = {
            "epsilon": independent if self.budget_on == DATA_INDEPENDENT else dependent,
            "delta": delta,
            "kind": self.budget_on,
            "data_independent_epsilon": independent,
            "data_dependent_epsilon": dependent,
            "order": independent_order if self.budget_on == DATA_INDEPENDENT else dependent_order,
            "budget": {"epsilon": self.budget.epsilon, "delta": delta, "on": self.budget_on},
            "queries_answered": self.answered,
            "queries": self.queries,
            "mechanisms": [{"name": self.mechanism.name, **self.mechanism.parameters()}],
            "orders": self.orders.tolist(),
            "data_independent_rdp": self._independent.tolist(),
            "data_dependent_rdp": self._dependent.tolist(),
            "note": note,
            **(
                {"composed_with": self._prior_record, "prior_rdp": self._prior.tolist()}
                if self._prior_record is not None
                else {}
            ),
        }
        return with_figures(record)


def _by_teachers(entry: dict[str, Any]) -> bool:
    """Whether the teachers gave a ledger entry's answer (ledgers before ``by``: any label)."""
    return entry.get("by", "teachers" if entry["label"] != ABSTAIN else None) == "teachers"


def spent_curves(
    mechanism: Mechanism,
    orders: FloatArray,
    entries: Sequence[dict[str, Any]],
    source: object,
    *,
    prior: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """The data-independent and data-dependent RDP curves over ``orders`` after ``prior`` and
    the ledger ``entries``, summed in ledger order (as a run that answered them did).

    Raises:
        FreekdError: an entry's cost is over another number of orders (named by ``source``).
    """
    independent, dependent = prior.copy(), prior.copy()
    for entry in entries:
        if len(entry["rdp"]) != len(orders):
            raise FreekdError(
                f"{source} holds an RDP cost over {len(entry['rdp'])} orders for query "
                f"{entry['query']}, this run uses {len(orders)}; resume with the ledger's "
                "original settings"
            )
        independent += mechanism.independent_cost(orders, answered=_by_teachers(entry))
        dependent += np.asarray(entry["rdp"], dtype=np.float64)
    return independent, dependent


def mechanism_from_name(name: str, **parameters: float | None) -> Mechanism:
    """Build a registered mechanism, refusing missing or non-positive parameters by name."""
    cls = MECHANISMS.get(name)
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    missing = [f for f in fields if parameters.get(f) is None]
    if missing:
        raise FreekdError(f"--aggregator {name} needs {', '.join(missing)}")
    values = {f: float(parameters[f]) for f in fields}  # type: ignore[arg-type]
    for key, value in values.items():
        if key != "threshold" and not (value > 0 and math.isfinite(value)):
            raise FreekdError(f"{name}: {key} must be a positive number, got {value}")
    return cls(**values)
