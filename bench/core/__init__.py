"""The core wing: what every other wing shares and none depends on.

The vocabulary of names, the contracts a method is handed, the one error family, the registries,
the budgets a profile spends and the specs that identify a run, and the storage primitives
(atomic writes, locks, sealed caches) that the training, data and run wings use alike.
"""
