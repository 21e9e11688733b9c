"""Injected datagram loss, for demonstrations (``--loss P --seed N``).

On loopback a datagram is almost never lost, so a student would never see
what UDP does not promise.  Both UDP programs can drop a share of what they
receive, as a lossy network would, before anything else is done with it.
"""

import random


class InjectedLoss:
    """Decides, datagram by datagram, which are "lost".

    ``rate``: probability of a drop, 0 <= rate < 1 (float); ``seed``: makes
    the sequence of drops repeatable (int or None).  With rate 0 nothing is
    dropped and no random number is drawn.
    """

    def __init__(self, rate=0.0, seed=None):
        self.rate = rate
        self._random = random.Random(seed)

    def drops(self):
        """True if the datagram just received must be treated as lost."""
        return self.rate > 0 and self._random.random() < self.rate
