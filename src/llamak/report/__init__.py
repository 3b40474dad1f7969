"""Run reports and (later) model cards."""
