"""The fair scheduler's policies, kept apart from the machine's mechanics (forksim.machine):
EEVDF placement and slice protection (eevdf), load balancing with PELT load (balance), and the
scheduler's parameters as one replication uses them (params)."""
