"""The default hooks of the shared attack loop: the optimised variable is the adversarial image.

:class:`VoxelHooks` gives :class:`~medrobust.attacks.base.Attack` its voxel-attack hooks
(design.md section 5): ``init_state`` (x, or a random point of the ball), ``perturb`` (the
variable itself), ``update`` (left to each attack), ``project`` (onto ball ∩ range ∩ mask)
and ``finalize``. An attack whose variable is not the image (VAFA) overrides them.
"""
from __future__ import annotations

import torch

from medrobust.attacks.state import AttackState
from medrobust.units import expand_to

__all__ = ["VoxelHooks"]


class VoxelHooks:
    """The hooks of :class:`~medrobust.attacks.base.Attack` for voxel attacks; a mixin of it.

    Attributes:
        random_start: start uniformly in the ball (set by ``Attack.__init__``).
    """

    random_start: bool

    # -- hooks (voxel attacks: the variable is the adversarial image) ----------------------
    def init_state(self, x: torch.Tensor, state: AttackState) -> None:
        """Set ``state.var``: x itself, or a uniform random point of the ball if random_start.

        Linf: uniform in the box; L2: a uniform direction (inside the mask) with a radius
        uniform in [0, eps]; then projected onto ball ∩ range ∩ mask.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state; ``state.var`` is set to ``(B, C, *spatial)``.

        Example:
            >>> import torch
            >>> from medrobust.attacks import PGD
            >>> from medrobust.units import Budget
            >>> x = torch.full((1, 1, 4, 4), 0.5)
            >>> budget = Budget.linf(0.1, valid_range=(0.0, 1.0))
            >>> state = AttackState.create(budget, x, torch.tensor([0.05]), None, torch.Generator().manual_seed(0))
            >>> PGD(budget).init_state(x, state)
            >>> bool((state.var - x).abs().max() <= 0.1), bool((state.var != x).any())
            (True, True)
        """
        if not self.random_start:
            state.var = x.clone()
            return
        gen = state.generator
        if state.budget.norm == "linf":
            delta = (2 * torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) - 1) * state.eps_x
        else:  # direction uniform on the sphere (inside the mask), radius uniform in [0, eps]
            d = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            d = d * (state.mask if state.mask is not None else 1)
            n = d.reshape(d.shape[0], -1).norm(dim=1).clamp_min(1e-12)
            radius = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype)
            delta = d * expand_to(radius * state.eps / n, x)
        state.var = state.budget.project(x, x + delta, state.mask)

    def perturb(self, x: torch.Tensor, state: AttackState) -> torch.Tensor:
        """The image the model sees, differentiable in ``state.var``.

        Voxel attacks return ``state.var`` itself; VAFA maps its quantisation table to the
        image.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state.

        Returns:
            The perturbed images ``(B, C, *spatial)``.

        Example:
            >>> import torch
            >>> from medrobust.attacks import PGD
            >>> from medrobust.units import Budget
            >>> x = torch.zeros(1, 1, 4, 4)
            >>> budget = Budget.linf(0.1)
            >>> state = AttackState.create(budget, x, torch.tensor([0.05]), None, None)
            >>> state.var = x + 0.05
            >>> PGD(budget).perturb(x, state) is state.var
            True
        """
        return state.var

    def update(self, x: torch.Tensor, state: AttackState, grad: torch.Tensor, gain: torch.Tensor, t: int) -> None:
        """One ascent step on ``state.var`` along ``grad`` = d(gain)/d(var); subclasses override it.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state; the step writes ``state.var``.
            grad: gradient of the gain w.r.t. ``state.var`` (its shape).
            gain: ``(B,)`` the loss (or -loss when targeted) at the current iterate.
            t: the step, 1..T.

        Raises:
            NotImplementedError: in the base class.

        Example:
            >>> import torch
            >>> from medrobust.attacks import PGD
            >>> from medrobust.units import Budget
            >>> x = torch.zeros(1, 1, 4, 4)
            >>> budget = Budget.linf(0.1)
            >>> state = AttackState.create(budget, x, torch.tensor([0.05]), None, None)
            >>> state.var = x.clone()
            >>> PGD(budget).update(x, state, torch.ones_like(x), torch.zeros(1), t=1)
            >>> round(float(state.var.max()), 4)
            0.05
        """
        raise NotImplementedError

    def project(self, x: torch.Tensor, state: AttackState) -> None:
        """Project ``state.var`` onto ball ∩ range ∩ mask, in place on the state.

        Linf is inlined with the state's precomputed bounds (the same arithmetic as
        :meth:`Budget.project`, fewer kernels per step); L2 calls Budget.project.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state; ``state.var`` ``(B, C, *spatial)`` is replaced.

        Example:
            >>> import torch
            >>> from medrobust.attacks import PGD
            >>> from medrobust.units import Budget
            >>> x = torch.full((1, 1, 4, 4), 0.95)
            >>> budget = Budget.linf(0.1, valid_range=(0.0, 1.0))
            >>> state = AttackState.create(budget, x, torch.tensor([0.05]), None, None)
            >>> state.var = x + 0.5
            >>> PGD(budget).project(x, state)
            >>> round(float(state.var.max()), 4)                  # the range's top, not x + eps
            1.0
        """
        if state.budget.norm != "linf":
            state.var = state.budget.project(x, state.var, state.mask)
            return
        delta = state.var - x
        if state.mask is not None:
            delta = delta * state.mask
        out = x + torch.clamp(delta, state.neg_eps_x, state.eps_x)
        state.var = out if state.low_x is None else torch.clamp(out, state.low_x, state.high_x)

    def finalize(self, x: torch.Tensor, state: AttackState) -> torch.Tensor:
        """The image of the last iterate of a restart, detached.

        Args:
            x: clean images ``(B, C, *spatial)``.
            state: the restart's state after its last step.

        Returns:
            ``(B, C, *spatial)``, no graph.

        Example:
            >>> import torch
            >>> from medrobust.attacks import PGD
            >>> from medrobust.units import Budget
            >>> x = torch.zeros(1, 1, 4, 4)
            >>> state = AttackState.create(Budget.linf(0.1), x, torch.tensor([0.05]), None, None)
            >>> state.var = (x + 0.05).requires_grad_(True)
            >>> PGD(Budget.linf(0.1)).finalize(x, state).requires_grad
            False
        """
        return self.perturb(x, state).detach()

