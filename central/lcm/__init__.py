"""The VNF lifecycle (SOL 003 shapes): instances of a descriptor, turned into servers,
ports, networks and volumes at a site by operations (instantiate, scale, heal,
terminate) whose occurrences move through the SOL 003 states.

- :mod:`central.lcm.states`: the operation state machine (pure).
- :mod:`central.lcm.plan`: descriptor + request -> resource intents (pure).
- :mod:`central.lcm.resources`: records intents / removes what an operation made (store).
- :mod:`central.lcm.engine`: the background task driving operations from the sites' reports
  (its scale and heal steps in :mod:`central.lcm.scale_heal`).
- :mod:`central.lcm.records`: instances and operation occurrences in the store.
- :mod:`central.lcm.catalog`: where descriptors are found (the seam to VNF packages).
"""
