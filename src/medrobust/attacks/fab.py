"""FAB, Linf and L2: the untargeted attack and FAB-T over the top-k targets.

Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive boundary
attack".

FAB is a minimum-norm attack. Each step linearises the classifier at the iterate x_k,
takes the decision hyperplane closest in the dual norm (untargeted: over all classes;
targeted: the one towards the target), projects both x_k and the clean x onto it inside
the valid range (:func:`project_hyperplane`), and moves to the convex combination
``(x_k + η d_k)(1 - α) + (x + η d_0) α`` with α = min(‖d_k‖ / (‖d_k‖ + ‖d_0‖), α_max);
an iterate that is adversarial is recorded when it is the smallest perturbation so far and
pulled back towards x by β. The returned image is the smallest adversarial found,
projected onto the budget (AutoAttack counts FAB's result only when its norm is <= eps; a
projected larger one is kept when it still fools the model, which can only help), or the
clean image when none was found. ``extra["norm"]`` is the norm of the smallest
adversarial perturbation found (inf if none). This follows ``fab_pt.py`` / ``fab_base.py``
of github.com/fra31/auto-attack; differences: the valid range may be any box (or
unbounded) and a mask fixes voxels, the projection is one sort-and-search for both norms
(the reference solves the same problem per norm), and restart r > 0 starts at 0.5·eps in a
random direction as the reference but inside the mask.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from medrobust.attacks.base import Attack, AttackResult, AttackState
from medrobust.attacks.outcome import sample_metric
from medrobust.attacks.target_loop import over_targets
from medrobust.units import Budget, expand_to

__all__ = ["FAB", "FABT", "project_hyperplane"]


def project_hyperplane(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor, low: torch.Tensor,
                       high: torch.Tensor, norm: str) -> torch.Tensor:
    """The smallest step d with ``w·(t + d) = b`` and ``low <= t + d <= high``, per row.

    Solves min ‖d‖ (Linf or L2) under the hyperplane and box constraints, as FAB's
    ``projection_linf`` / ``projection_l2``. Each coordinate moves towards the hyperplane
    by ``min(s, r_i)`` (Linf) or ``|w_i| min(s, r_i)`` (L2), r_i its room in the box (L2:
    room / |w_i|); the scalar s solves the piecewise-linear equation ``Σ v_i min(s, r_i) =
    |w·t - b|`` (v = |w|, resp. w²), found by sorting the breakpoints r. When the
    hyperplane cannot be reached inside the box, d goes to the box's corner.

    Args:
        t: points ``(N, n)``.
        w: normals ``(N, n)``; a zero coordinate never moves.
        b: offsets ``(N,)``.
        low: the box's lower corner, broadcastable to ``(N, n)`` (may be -inf).
        high: its upper corner, broadcastable to ``(N, n)`` (may be inf).
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        ``d`` ``(N, n)``.

    Example:
        >>> import torch
        >>> t, w = torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 1.0]])
        >>> project_hyperplane(t, w, torch.tensor([0.5]), torch.tensor(0.0), torch.tensor(1.0), "linf")
        tensor([[-0.2500, -0.2500]])
        >>> project_hyperplane(t, w, torch.tensor([0.2]), torch.tensor(0.0), torch.tensor(1.0), "l2")
        tensor([[-0.4000, -0.4000]])
        >>> project_hyperplane(t, w, torch.tensor([-1.0]), torch.tensor(0.0), torch.tensor(1.0), "l2")  # out of reach
        tensor([[-0.5000, -0.5000]])
    """
    c = (w * t).sum(1) - b
    direction = torch.where(c[:, None] >= 0, -w.sign(), w.sign())  # the side that reduces |c|
    room = torch.where(direction > 0, high - t, torch.where(direction < 0, t - low, torch.zeros_like(t)))
    aw = w.abs()
    if norm == "linf":
        v, r = aw, room
    else:
        v, r = aw * aw, torch.where(aw > 0, room / aw.clamp_min(1e-30), torch.zeros_like(room))
    r_sorted, order = r.sort(1)
    v_sorted = v.gather(1, order)
    vr = torch.where(v_sorted > 0, v_sorted * r_sorted, torch.zeros_like(v_sorted))
    below = torch.cat((torch.zeros_like(vr[:, :1]), vr[:, :-1].cumsum(1)), 1)   # Σ_{i<j} v_i r_i (r may be inf)
    tail = v_sorted.flip(1).cumsum(1).flip(1)                   # Σ_{i>=j} v_i
    reached = below + r_sorted * tail                           # h(r_j), nondecreasing
    need = c.abs()
    j = (reached < need[:, None]).sum(1)
    feasible = j < r.shape[1]
    jj = j.clamp(max=r.shape[1] - 1)[:, None]
    s = ((need[:, None] - below.gather(1, jj)) / tail.gather(1, jj).clamp_min(1e-30))[:, 0]
    s = torch.where(feasible, s, r_sorted[:, -1])
    move = torch.minimum(s[:, None], r)
    return direction * (move if norm == "linf" else aw * move)


def _norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-row norm of a flat batch ``(N, n)``."""
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


class FAB(Attack):
    """FAB, untargeted: ``FAB(budget, steps=100)(model, x, y)``, classifiers, Linf or L2.

    Args:
        budget: the threat model (Linf or L2): the norm FAB minimises, and the eps within
            which a found perturbation counts.
        steps: iterations per restart (100 in AutoAttack).
        restarts: the first from x, the others from a random point at 0.5·eps.
        alpha_max: the largest weight of the step from x (0.1).
        eta: overshooting of the projection (1.05).
        beta: backward step of an adversarial iterate towards x (0.9).
        loss: the loss recorded in ``loss_history`` / ``best_loss`` (default "margin");
            FAB does not optimise it.
        seed: seeds the random restarts.

    Raises:
        ValueError: bad numbers; at run time, segmentation labels.

    Shape:
        - x: ``(B, C, *spatial)``; y: ``(B,)`` true labels; output as ``x``.
        - ``run(...).loss_history``: ``(R * (T + 1), B)``, the loss at the start and after
          each step; ``extra["norm"]``: ``(B,)`` the smallest adversarial norm found.

    Example:
        >>> import torch
        >>> from medrobust.attacks import FAB
        >>> from medrobust.units import Budget
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> x = torch.rand(4, 1, 8, 8)
        >>> y = model(x).argmax(1)
        >>> budget = Budget.linf(0.5, valid_range=(0.0, 1.0))
        >>> result = FAB(budget, steps=10).run(model, x, y)
        >>> result.metric.tolist(), bool((result.extra["norm"] <= 0.5).all())    # a linear model: all fooled
        ([0.0, 0.0, 0.0, 0.0], True)
    """

    name = "fab"
    uses_step_size = False

    def __init__(self, budget: Budget, *, steps: int = 100, restarts: int = 1, alpha_max: float = 0.1,
                 eta: float = 1.05, beta: float = 0.9, loss: Any = "margin", seed: int | None = None) -> None:
        if not 0 <= alpha_max <= 1 or eta < 1 or not 0 < beta <= 1:
            raise ValueError(f"need 0 <= alpha_max <= 1, eta >= 1, 0 < beta <= 1; got alpha_max={alpha_max}, "
                             f"eta={eta}, beta={beta}")
        super().__init__(budget, steps=steps, restarts=restarts, loss=loss, seed=seed)
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.budget.describe()}, steps={self.steps}, restarts={self.restarts}, "
                f"alpha_max={self.alpha_max}, eta={self.eta}, beta={self.beta})")

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, base: AttackState) -> AttackResult:
        if y.ndim != 1:
            raise ValueError(f"y: {type(self).__name__} attacks classifiers; give (B,) class labels")
        return self._search(model, x, y, base, None)

    def _linearise(self, model: nn.Module, x1: torch.Tensor, y: torch.Tensor,
                   target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits (B, K), f (B, H), grad f (B, H, n)) of the H decision functions at x1.

        Untargeted: f_k = z_k - z_y for every class (f_y = 1e10, never chosen); targeted:
        the one function z_t - z_y.
        """
        B, u = x1.shape[0], torch.arange(x1.shape[0], device=x1.device)
        xr = x1.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xr)
            if target is not None:
                diff = logits[u, target] - logits[u, y]
                grad = torch.autograd.grad(diff.sum(), xr)[0].reshape(B, 1, -1)
                return logits.detach(), diff.detach()[:, None], grad
            K = logits.shape[1]
            rows = [torch.autograd.grad(logits[:, k].sum(), xr, retain_graph=k < K - 1)[0].reshape(B, -1)
                    for k in range(K)]
        jac = torch.stack(rows, 1)
        logits = logits.detach()
        f = logits - logits[u, y][:, None]
        f[u, y] = 1e10
        return logits, f, jac - jac[u, y][:, None]

    def _search(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, base: AttackState,
                target: torch.Tensor | None) -> AttackResult:
        """The FAB iterations of all restarts (towards ``target`` (B,) when given)."""
        B, norm = x.shape[0], base.budget.norm
        x0 = x.reshape(B, -1)
        low = x.new_tensor(-math.inf) if base.low_x is None else base.low_x.reshape(B, 1)
        high = x.new_tensor(math.inf) if base.high_x is None else base.high_x.reshape(B, 1)
        movable = None if base.mask is None else base.mask.expand_as(x).reshape(B, -1)
        best, best_norm = x0.clone(), x.new_full((B,), math.inf)
        history: list[torch.Tensor] = []
        u = torch.arange(B, device=x.device)
        for restart in range(self.restarts):
            x1 = x0.clone() if restart == 0 else self._random_start(x, base).reshape(B, -1)
            for t in range(self.steps):
                logits, f, g = self._linearise(model, x1.reshape(x.shape), y, target)
                if t == 0:
                    history.append(self._gain(logits, y, self.steps))
                with torch.no_grad():
                    if movable is not None:
                        g = g * movable[:, None]
                    dual = g.abs().sum(2) if norm == "linf" else g.norm(dim=2)
                    pick = (f.abs() / (dual + 1e-12)).argmin(1)
                    w = g[u, pick]
                    b = (w * x1).sum(1) - f[u, pick]
                    d = project_hyperplane(torch.cat((x1, x0)), torch.cat((w, w)), torch.cat((b, b)),
                                           torch.cat((low, low)) if low.ndim else low,
                                           torch.cat((high, high)) if high.ndim else high, norm)
                    size = _norm(d, norm).clamp_min(1e-8)
                    alpha = (size[:B] / (size[:B] + size[B:])).clamp(0, self.alpha_max)[:, None]
                    x1 = torch.clamp((x1 + self.eta * d[:B]) * (1 - alpha) + (x0 + self.eta * d[B:]) * alpha,
                                     low, high)
                    logits = model(x1.reshape(x.shape))
                    history.append(self._gain(logits, y, self.steps))
                    adv = logits.argmax(1) != y
                    dist = _norm(x1 - x0, norm)
                    better = adv & (dist < best_norm)
                    best = torch.where(better[:, None], x1, best)
                    best_norm = torch.where(better, dist, best_norm)
                    x1 = torch.where(adv[:, None], x0 + (x1 - x0) * self.beta, x1)
        with torch.no_grad():
            x_adv = base.budget.project(x, best.reshape(x.shape), base.mask)
            logits = model(x_adv)
            loss = self._gain(logits, y, self.steps)
            return AttackResult(x_adv, torch.stack(history), loss, 0.0, extra={"norm": best_norm},
                                metric=sample_metric(logits, y))

    def _random_start(self, x: torch.Tensor, base: AttackState) -> torch.Tensor:
        """The clean images plus a random perturbation of norm 0.5·eps (inside the mask), clipped to the range."""
        draw = torch.rand if base.budget.norm == "linf" else torch.randn
        d = draw(x.shape, generator=base.generator, device=x.device, dtype=x.dtype)
        if base.budget.norm == "linf":
            d = 2 * d - 1
        if base.mask is not None:
            d = d * base.mask
        size = _norm(d.reshape(x.shape[0], -1), base.budget.norm).clamp_min(1e-12)
        out = x + d * expand_to(0.5 * base.eps / size, x)
        return out if base.low_x is None else torch.clamp(out, base.low_x, base.high_x)


class FABT(FAB):
    """FAB-T: targeted FAB over the top-k target classes, ``FABT(budget, steps=100, n_targets=9)``.

    For each target rank (:mod:`medrobust.attacks.target_loop`) a targeted FAB run on the
    samples not yet fooled within eps; success is misclassification (into any class).

    Args:
        budget: the threat model (Linf or L2).
        n_targets: the most target classes per sample (9; min(n_targets, K - 1) are used).
        **options: as :class:`FAB` (``restarts`` per target).

    Raises:
        ValueError: ``n_targets`` < 1 or bad FAB options.

    Shape:
        - x: ``(B, C, *spatial)``; y: ``(B,)``; output as ``x``.

    Example:
        >>> import torch
        >>> from medrobust.attacks import FABT
        >>> from medrobust.units import Budget
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
        >>> x = torch.rand(4, 1, 8, 8)
        >>> y = model(x).argmax(1)
        >>> result = FABT(Budget.l2(2.0, valid_range=(0.0, 1.0)), steps=10, n_targets=2).run(model, x, y)
        >>> result.metric.tolist()
        [0.0, 0.0, 0.0, 0.0]
    """

    name = "fab-t"

    def __init__(self, budget: Budget, *, n_targets: int = 9, **options: Any) -> None:
        if isinstance(n_targets, bool) or not isinstance(n_targets, int) or n_targets < 1:
            raise ValueError(f"n_targets must be an integer >= 1, got {n_targets!r}")
        super().__init__(budget, **options)
        self.n_targets = n_targets

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", n_targets={self.n_targets})"

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, base: AttackState) -> AttackResult:
        if y.ndim != 1:
            raise ValueError("y: FABT attacks classifiers; give (B,) class labels")
        return over_targets(model, x, y, base, self.n_targets,
                            lambda m, xs, ys, target, state: self._search(m, xs, ys, state, target), self.keep)
