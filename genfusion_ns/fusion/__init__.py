"""Cyclic fusion: novel trajectories, repair rounds and injection of repaired frames into training."""
