"""Storage plugins: interfaces in `interfaces`, the registry in `registry`, one package per
storage type, one module per matrix cell."""
