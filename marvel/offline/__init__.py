"""Offline safe-RL pretraining: every algorithm yields the same ``Pretrained`` start."""

from marvel.offline.bcql import BCQL
from marvel.offline.bearl import BEARL
from marvel.offline.cpq import CPQ

OFFLINE_ALGORITHMS = {"cpq": CPQ, "bearl": BEARL, "bcql": BCQL}  # offline.algo -> its learner
