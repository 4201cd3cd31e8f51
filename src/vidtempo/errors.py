"""Errors a user can cause. The CLI turns these into one line and exit status 2."""


class VidtempoError(Exception):
    """Bad input from the user: a missing or malformed file, an invalid argument."""


class FeatureStoreError(VidtempoError):
    """A feature file is missing, unreadable or inconsistent."""


class CheckpointError(VidtempoError):
    """A checkpoint is missing, unreadable, unsafe or incompatible."""


class ConfigError(VidtempoError):
    """A model or training configuration is invalid."""
