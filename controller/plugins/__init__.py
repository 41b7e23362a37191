"""Storage plugins: the interfaces (`interfaces/`), the registry, one package per storage
type (its provider, config model and, for a primary type, its KVM backend; for a backup
type, its side of the matrix cells on KVM), and the matrix of what Strata ships
(`matrix`)."""
