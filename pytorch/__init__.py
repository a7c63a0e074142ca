"""DeepSpeech2 model, data loading, decoding and the training loop."""
