"""Re-running what a published table cites: `transferlab reproduce` (docs/reproduce.md)."""
