"""Evaluation suites: long-context probes now; lm-eval suites (ko-core, en-retention, …) later."""
