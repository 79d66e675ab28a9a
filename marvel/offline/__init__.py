"""Offline safe-RL pretraining: every algorithm yields the same ``Pretrained`` start."""
