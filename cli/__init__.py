"""`strata`: the operator's command-line client of the controller API."""
