"""Verifiable constraints in the style of IFEval (Zhou et al. 2023, "Instruction-Following
Evaluation for Large Language Models"): `checks` measures a response against one constraint and
says what it found, `attach` adds constraints to instructions deterministically."""
