"""One module per ``nri-podres`` sub-command."""
