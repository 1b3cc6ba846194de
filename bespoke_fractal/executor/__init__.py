"""The coordinator: runs the three stages for a batch of molecules."""
