"""Running a model on a device: devices and precision, batching, streaming, compile."""
