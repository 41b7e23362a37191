"""The plugin interfaces, after the CloudStack storage subsystem and ZStack's M x N model.

A storage type is a provider of one role (`primary`, `backup`) handing out its lifecycle
and driver, typed by its settings model (`stores`). Primary storage logic that depends
on the hypervisor lives in a `PrimaryStorageBackend` per (primary type, hypervisor)
(`backend`); moving bytes between a primary and a backup type lives in a mediator per
(primary type, backup type, hypervisor), one cell of the matrix (`mediator`). The
extension points that choose hosts, copies and installs are in `motion`.
"""
