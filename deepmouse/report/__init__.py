"""Plots and DVC metrics from the results store."""
