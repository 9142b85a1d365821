"""pdp_observe: an observability sidecar for self-hosted Prisma stacks."""
__version__ = "0.1.0"
