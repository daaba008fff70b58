"""The exporter's error for what keyscore cannot score exactly."""


class UnsupportedEstimatorError(ValueError):
    """The estimator, or one of its options, cannot be expressed as a keyscore model spec."""
