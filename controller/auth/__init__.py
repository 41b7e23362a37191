"""Who may call the API: bearer tokens with roles, checked on every route but /healthz,
and an audit record of every mutating call."""
