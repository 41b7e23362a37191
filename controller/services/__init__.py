"""Services: the controller's use cases. Each has a submit half, called by the API, that
validates and writes rows plus a job in one transaction, and a run half, the job handler,
that drives plugins and agents and is safe to run again after a restart."""
