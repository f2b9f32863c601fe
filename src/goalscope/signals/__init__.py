"""Update signals: Δ = MB − MA and the tensor algebra on parameter dicts, and the aggregators that turn many Δs
into one heatmap (a score per parameter).

Pure functions of state dicts. They sit below the program because its jobs build MA − αΔ (negation) and its config
checks aggregator names before anything trains. May import: the core helpers only.
"""
