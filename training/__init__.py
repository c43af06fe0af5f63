"""Training of the LSTM text classifier (imports torch)."""
