"""Reconcilers: one module per policy, each an observe -> decide -> act triple."""
