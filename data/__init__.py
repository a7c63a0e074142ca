"""LibriSpeech download, preparation and verification; never imports the model."""
