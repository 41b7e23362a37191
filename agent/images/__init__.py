"""Images arriving on this host: checked before anything trusts them (`check`), written
under a temporary name and published only once verified (`writer`)."""
