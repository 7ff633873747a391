"""When a run has gone backwards far enough to undo an epoch, and what undoing does to the rate.

A run keeps its best weights by validation accuracy, the first model (epoch 0) included, so its
result is never worse than where it started. Backing off does more: it stops a run that diverged
from wasting its remaining epochs there. The rule must tell a divergence from noise and from the
slow rise of the validation loss that comes with ordinary over-fitting:

* the validation loss is not a number (or the training loss was not: the weights broke), or
* the validation loss exceeds the lowest so far by half of it plus :data:`FLOOR_SHARE` of the loss
  of chance (ln of the class count), *and* the accuracy is below the best.

Why these numbers: between the epochs of a converging run the validation loss moves by a few per
cent of itself, and over-fitting raises it by a few per cent per epoch while the accuracy holds; a
run whose rate is too large loses half its accuracy in an epoch and its loss rises by half or more
(measured: 26.7 % → 10.6 %, the training loss 1.8 → 2.9 on the built-in digits at 224 px). The floor
keeps a tiny loss (0.02 → 0.04 on an easy set) from reading as a divergence. Requiring a lower
accuracy as well means an epoch that is better by the measure the run keeps is never undone.
"""
from __future__ import annotations

import math

RISE_SHARE = 0.5          # of the lowest validation loss so far
FLOOR_SHARE = 0.05        # of ln(classes), the loss of a classifier at chance
RATE_DIVISOR = 3.0        # each back-off divides the rate by this
MAX_BACKOFFS = 2


def diverged(val_loss: float, val_acc: float, lowest_loss: float | None, best_acc: float | None,
             num_classes: int) -> bool:
    """True when an epoch's validation says the run diverged (see the module's rule)."""
    if not math.isfinite(val_loss):
        return True
    if lowest_loss is None or best_acc is None or val_acc >= best_acc:
        return False
    limit = lowest_loss * (1.0 + RISE_SHARE) + FLOOR_SHARE * math.log(max(2, num_classes))
    return val_loss > limit
