"""Estimators: pure functions of SGLD draws (ArviZ data or a finished MCMC)."""
