"""Pure planning: settings + request in, plain data out (container spec, download plan, launch plan).

Nothing here talks to Docker, the network or the GPU; adapters execute the plans.
"""
