"""Training loops (Lightning), evaluation and prediction drivers."""
