"""The embedded demo (`infra-controller sandbox`): a local AWS emulator (moto, installed with
the `sandbox` extra), a demo stack in it, simulated visitors, and a stand-in terraform."""
