"""The arms of a tuned comparison (experiment=tuned_compare): `tune.arm` on each job it launches.

- default: the strategy's own settings, tested over the seeds (what an untuned table shows);
- search: one trial of the search, scored on validation only, with the test split sealed;
- tuned: the settings the search chose, re-run over the seeds and tested once each.
"""

DEFAULT_ARM = "default"
SEARCH_ARM = "search"
TUNED_ARM = "tuned"
ARMS = (DEFAULT_ARM, SEARCH_ARM, TUNED_ARM)

# What the tuned sweep writes into its sweep dir (tune/summary.py); the report links the markdown.
TUNING_JSON, TUNING_MARKDOWN = "tuning.json", "tuning.md"
