"""Held-out evaluation: eval judges separate from the training judge, intervals on every rate,
paired comparisons with the starting policy (DESIGN.md, "Evaluation")."""
