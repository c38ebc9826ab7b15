"""Classification metrics: accuracy, confusion matrix, balanced accuracy and AUROC.

``pred`` is logits ``(B, K)`` or labels ``(B,)``; ``y`` is labels ``(B,)``.
"""
from __future__ import annotations

import warnings

import torch
from monai.metrics import compute_roc_auc
from monai.networks.utils import one_hot


def _class_labels(pred: torch.Tensor) -> torch.Tensor:
    if pred.ndim == 2:
        return pred.argmax(dim=1)
    if pred.ndim == 1:
        return pred.long()
    raise ValueError(f"pred must be logits (B, K) or labels (B,), got shape {tuple(pred.shape)}")


def _check_y(y: torch.Tensor, batch: int) -> torch.Tensor:
    if y.shape != (batch,):
        raise ValueError(f"y must be class labels of shape ({batch},), got {tuple(y.shape)}")
    return y.long().cpu()


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of samples whose predicted class equals ``y``.

    Args:
        pred: logits ``(B, K)`` (argmax is taken) or predicted labels ``(B,)``.
        y: true labels ``(B,)``.

    Returns:
        The accuracy in [0, 1] (NaN for an empty batch).

    Raises:
        ValueError: ``pred`` neither ``(B, K)`` nor ``(B,)``, or ``y`` not ``(B,)``.

    Shape:
        - pred: ``(B, K)`` or ``(B,)``
        - y: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.metrics import accuracy
        >>> logits = torch.tensor([[2.0, 0.1], [0.3, 1.0], [1.5, 0.2], [0.0, 0.4]])
        >>> y = torch.tensor([0, 1, 1, 1])            # sample 2 is misclassified
        >>> accuracy(logits, y)
        0.75
    """
    labels = _class_labels(pred).cpu()
    return float((labels == _check_y(y, labels.shape[0])).double().mean())


def confusion_matrix(pred: torch.Tensor, y: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """``(K, K)`` int64 counts; row = true class, column = predicted class.

    ``num_classes`` defaults to K of the logits, or to the largest label + 1.

    Args:
        pred: logits ``(B, K)`` (argmax is taken) or predicted labels ``(B,)``.
        y: true labels ``(B,)``.
        num_classes: K; default as above.

    Returns:
        int64 tensor on the CPU; ``cm[i, j]`` counts samples of class i predicted as j.

    Raises:
        ValueError: bad shapes (as for :func:`accuracy`) or labels outside ``[0, K)``.

    Shape:
        - pred: ``(B, K)`` or ``(B,)``
        - y: ``(B,)``
        - output: ``(K, K)``

    Example:
        >>> import torch
        >>> from medrobust.metrics import confusion_matrix
        >>> logits = torch.tensor([[2.0, 0.1], [0.3, 1.0], [1.5, 0.2], [0.0, 0.4]])
        >>> y = torch.tensor([0, 1, 1, 1])            # sample 2 is misclassified
        >>> confusion_matrix(logits, y).tolist()
        [[1, 0], [1, 2]]
    """
    # MONAI's ConfusionMatrixMetric gives per-class TP/FP/TN/FN, not the K x K table.
    labels = _class_labels(pred).cpu()
    y = _check_y(y, labels.shape[0])
    if num_classes is None:
        num_classes = pred.shape[1] if pred.ndim == 2 else int(max(labels.max(), y.max())) + 1
    if labels.numel() and (min(labels.min(), y.min()) < 0 or max(labels.max(), y.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    return torch.bincount(y * num_classes + labels, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def balanced_accuracy(pred: torch.Tensor, y: torch.Tensor, num_classes: int | None = None) -> float:
    """Mean recall over the classes present in ``y`` (``num_classes`` as for the confusion matrix).

    Args:
        pred: logits ``(B, K)`` (argmax is taken) or predicted labels ``(B,)``.
        y: true labels ``(B,)``.
        num_classes: K; default as for :func:`confusion_matrix`.

    Returns:
        The balanced accuracy in [0, 1].

    Raises:
        ValueError: as for :func:`confusion_matrix`.

    Shape:
        - pred: ``(B, K)`` or ``(B,)``
        - y: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.metrics import balanced_accuracy
        >>> logits = torch.tensor([[2.0, 0.1], [0.3, 1.0], [1.5, 0.2], [0.0, 0.4]])
        >>> y = torch.tensor([0, 1, 1, 1])            # sample 2 is misclassified
        >>> round(balanced_accuracy(logits, y), 4)   # recalls 1 and 2/3
        0.8333
    """
    cm = confusion_matrix(pred, y, num_classes).double()
    support = cm.sum(dim=1)
    present = support > 0
    return float((cm.diagonal()[present] / support[present]).mean())


def auroc(scores: torch.Tensor, y: torch.Tensor, from_logits: bool = True) -> float:
    """Area under the ROC curve; multi-class: mean of one-vs-rest AUCs.

    Classes absent from ``y`` (or present in every sample) have no AUC and are skipped;
    NaN when no class has one.

    Args:
        scores: logits ``(B, K)`` (softmax is applied) or probabilities (``from_logits=False``).
        y: labels ``(B,)``.
        from_logits: whether ``scores`` are logits (default) or probabilities.

    Returns:
        The AUC in [0, 1], or NaN.

    Raises:
        ValueError: ``scores`` not ``(B, K)`` or ``y`` not ``(B,)``.

    Shape:
        - scores: ``(B, K)``
        - y: ``(B,)``

    Example:
        >>> import torch
        >>> from medrobust.metrics import auroc
        >>> logits = torch.tensor([[2.0, 0.1], [0.3, 1.0], [1.5, 0.2], [0.0, 0.4]])
        >>> y = torch.tensor([0, 1, 1, 1])            # sample 2 is misclassified
        >>> auroc(logits, y)   # every class-1 sample scores higher than the class-0 one
        1.0
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be (B, K) logits or probabilities, got shape {tuple(scores.shape)}")
    probs = (torch.softmax(scores.double(), dim=1) if from_logits else scores.double()).detach().cpu()
    y = _check_y(y, probs.shape[0])
    with warnings.catch_warnings():  # MONAI warns per class without positives or negatives
        warnings.simplefilter("ignore")
        per_class = torch.tensor(compute_roc_auc(probs, one_hot(y[:, None], probs.shape[1]), average="none"),
                                 dtype=torch.float64)
    return float(per_class.nanmean())
