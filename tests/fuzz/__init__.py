"""Property-based fuzzing of the firmware: the protocol model, the input strategies, the drivers."""
