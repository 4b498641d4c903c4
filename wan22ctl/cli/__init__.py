"""Host-side CLI: Typer apps, one module per command group; parse, call, render — nothing else."""
